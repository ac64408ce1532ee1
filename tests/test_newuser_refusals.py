"""Mistakes refused at once, in one sentence naming what to fix, before anything starts or is spooled.

Real processes (`python -m domas.cli`) on real files.
"""

from __future__ import annotations

import pytest

from tests.test_cli_hostile import deployment, domas, one_sentence  # noqa: F401  (deployment: a fixture)


# -- domas serve --listen -----------------------------------------------------------------------------

@pytest.mark.parametrize("listen", ["[::1", "[::1]]:0", ":99999", "host:", "a b:80", "300.1.1.1:0",
                                    "nohost.invalid:0"])
def test_a_listen_address_that_is_no_address_names_the_flag(deployment, listen):
    """Was, for '[::1' (an unterminated IPv6 literal), 'a b:80' and a host that does not resolve:
    'controller.http_listen: cannot listen on ::1: Name or service not known' (the resolver's text,
    a setting the user never gave, exit 78); '[::1]]:0' was served on ::1."""
    line = one_sentence(domas("--config", "domas.toml", "serve", "--listen", listen, cwd=deployment), 2)
    assert line.startswith("domas: --listen") and "controller.http_listen" not in line
