"""Dataset PIDs (pure) and the open_catalogue factory."""

from __future__ import annotations

import re

import pytest

from domas.catalogue import SpooledCatalogue, open_catalogue
from domas.catalogue.base import Dataset
from domas.catalogue.mongo import MongoCatalogue
from domas.catalogue.pid import dataset_pid, path_token, prefix_style
from domas.catalogue.sqlite import SQLiteCatalogue
from domas.config import CatalogueConfig
from domas.errors import ConfigError, DomasError


def test_cstr_and_doi_pids():
    cstr = dataset_pid("CSTR:17058.11.HEPS", "2025-0042", "/data/B1/2025-0042/scan1")
    assert re.fullmatch(r"CSTR:17058\.11\.HEPS\.2025-0042\.[0-9A-HJKMNP-TV-Z]{12}", cstr)
    doi = dataset_pid("10.12345/heps", "2025-0042", "/data/B1/2025-0042/scan1")
    assert doi == "10.12345/heps.2025-0042." + path_token("/data/B1/2025-0042/scan1").lower()
    assert dataset_pid("10.12345/", "bt", "/p") == "10.12345/bt." + path_token("/p").lower()


def test_pid_is_stable_and_distinct():
    assert dataset_pid("CSTR:17058.11.HEPS", "bt", "/a") == dataset_pid("CSTR:17058.11.HEPS", "bt", "/a")
    tokens = {path_token(f"/data/scan{i}") for i in range(20000)}
    assert len(tokens) == 20000
    assert path_token("/a") == "NHX934R3FH51"                     # fixed forever: PIDs are persistent


def test_unsafe_beamtime_characters_are_replaced():
    assert dataset_pid("CSTR:17058.11.HEPS", "2025/04 b", "/x").startswith("CSTR:17058.11.HEPS.2025-04-b.")
    assert dataset_pid("CSTR:17058.11.HEPS", "///", "/x").startswith("CSTR:17058.11.HEPS.none.")


@pytest.mark.parametrize("prefix", ["", "HEPS", "CSTR:1705.11.HEPS", "CSTR:17058.11.", "11.1234/x", "10.12/x",
                                    "CSTR:17058.11.HE PS"])
def test_bad_prefixes_are_config_errors(prefix):
    with pytest.raises(ConfigError, match="catalogue.pid_prefix"):
        prefix_style(prefix)
    with pytest.raises(ConfigError):
        open_catalogue(CatalogueConfig(pid_prefix=prefix), "/tmp")


def test_doi_prefix_through_a_catalogue(tmp_path):
    cat = open_catalogue(CatalogueConfig(pid_prefix="10.12345/heps"), tmp_path)
    ds = cat.upsert_dataset(Dataset("bt1", "/data/x"))
    assert ds.pid.startswith("10.12345/heps.bt1.") and cat.get_dataset(ds.pid) == ds


def test_factory_picks_the_backend(tmp_path):
    default = open_catalogue(CatalogueConfig(), tmp_path / "state")
    assert isinstance(default, SQLiteCatalogue) and default.path == str(tmp_path / "state" / "catalogue.sqlite")
    explicit = open_catalogue(CatalogueConfig(url=f"sqlite://{tmp_path}/elsewhere/c.db"), tmp_path)
    assert explicit.path == f"{tmp_path}/elsewhere/c.db"
    mongo = open_catalogue(CatalogueConfig(url="mongodb://127.0.0.1:1/heps"), tmp_path)
    assert isinstance(mongo, MongoCatalogue) and mongo._db.name == "heps"          # constructing never connects
    spooled = open_catalogue(CatalogueConfig(url="mongodb://127.0.0.1:1/"), tmp_path, spool=True)
    assert isinstance(spooled, SpooledCatalogue) and spooled.path.parent == tmp_path / "spool"
    for cat in (default, explicit, mongo, spooled):
        cat.close()


@pytest.mark.parametrize("url", ["postgres://x/y", "sqlite://", "mongodb://host:notaport/"])
def test_factory_refuses_bad_urls(tmp_path, url):
    with pytest.raises(ConfigError, match="catalogue.url"):
        open_catalogue(CatalogueConfig(url=url), tmp_path)


def test_a_file_that_is_not_a_catalogue_is_one_sentence(tmp_path):
    (tmp_path / "junk.db").write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(DomasError, match="junk.db is not an SQLite database or is damaged"):
        open_catalogue(CatalogueConfig(url=f"sqlite://{tmp_path}/junk.db"), tmp_path)
