"""Data service: REST API, web portal, downloads, users and access policy."""
