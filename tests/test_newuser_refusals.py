"""Mistakes refused at once, in one sentence naming what to fix, before anything starts or is spooled.

Real processes (`python -m domas.cli`) on real files.
"""

from __future__ import annotations

import pytest

from tests.fixtures.common import free_port
from tests.test_cli_hostile import deployment, domas, one_sentence, spooled  # noqa: F401  (deployment: a fixture)


# -- domas serve --listen -----------------------------------------------------------------------------

@pytest.mark.parametrize("listen", ["[::1", "[::1]]:0", ":99999", "host:", "a b:80", "300.1.1.1:0",
                                    "nohost.invalid:0"])
def test_a_listen_address_that_is_no_address_names_the_flag(deployment, listen):
    """Was, for '[::1' (an unterminated IPv6 literal), 'a b:80' and a host that does not resolve:
    'controller.http_listen: cannot listen on ::1: Name or service not known' (the resolver's text,
    a setting the user never gave, exit 78); '[::1]]:0' was served on ::1."""
    line = one_sentence(domas("--config", "domas.toml", "serve", "--listen", listen, cwd=deployment), 2)
    assert line.startswith("domas: --listen") and "controller.http_listen" not in line


# -- domas publish closed PATH outside the beamline root ----------------------------------------------

@pytest.mark.parametrize("where", ["elsewhere/scan_0001.h5", "data/beamline/../scan_0001.h5", "data/beamline2/s.h5"])
def test_publish_of_a_file_outside_the_beamline_root_is_refused_before_anything_is_spooled(deployment, where):
    """Was: spooled (exit 0) and sent later, for the archiver to refuse on arrival ('is not under the
    beamline root'), so the announcement was lost there; now the same rule refuses it at once."""
    f = deployment / where
    f.parent.mkdir(parents=True, exist_ok=True)
    f.write_bytes(b"x" * 100)
    spool = deployment / "spool.sqlite"
    out = domas("--config", "domas.toml", "publish", "closed", where, "--url", f"amqp://127.0.0.1:{free_port()}/",
                "--spool", spool, "--timeout", "1", cwd=deployment)
    line = one_sentence(out, 2)
    assert "is not under the beamline root" in line and str(deployment / "data" / "beamline") in line
    assert spooled(spool) == 0


def test_publish_of_a_file_under_the_beamline_root_is_kept_for_the_bus(deployment):
    f = deployment / "data" / "beamline" / "B1" / "202611" / "Data" / "BT1" / "raw" / "scan_0001.h5"
    f.parent.mkdir(parents=True)
    f.write_bytes(b"x" * 100)
    spool = deployment / "spool.sqlite"
    out = domas("--config", "domas.toml", "publish", "closed", f, "--url", f"amqp://127.0.0.1:{free_port()}/",
                "--spool", spool, "--timeout", "1", cwd=deployment)
    assert out.returncode == 0 and "1 message(s) kept in the spool" in out.stderr, out.stderr
    assert spooled(spool) == 1


# -- a controller token gRPC cannot carry ------------------------------------------------------------

@pytest.mark.parametrize("token", ['"secret\\n"', '"sécret"'], ids=["newline", "non-ascii"])
@pytest.mark.parametrize("command", [["controller", "--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"],
                                     ["up", "--data-dir", "data"]], ids=lambda c: c[0])
def test_a_controller_with_a_token_grpc_cannot_carry_refuses_to_start(deployment, token, command):
    """Was: the controller started (and `domas up` ran), and then every agent and CLI call to it
    failed, each refused by gRPC on the client side; now it is one sentence at start, exit 78."""
    (deployment / "domas.toml").write_text(f'data_dir = "data"\n[controller]\ntoken = {token}\n'
                                           'listen = "127.0.0.1:0"\nmetrics_listen = "127.0.0.1:0"\n'
                                           'http_listen = "127.0.0.1:0"\n[agent]\nmetrics_listen = "127.0.0.1:0"\n')
    line = one_sentence(domas("--config", "domas.toml", *command, cwd=deployment, timeout=20), 78)
    assert line.startswith("domas: controller.token (or DOMAS_TOKEN) holds a control character")
