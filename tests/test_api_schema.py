"""schemathesis (4.x) over the app's own OpenAPI: in process (no 5xx, no schema violations), and
the CLI with ``--checks all`` against a real server (every check, ST202 included, with the
repository's schemathesis.toml), at a bounded number of examples."""

from __future__ import annotations

import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from shax_server import Settings, create_app

from tests.servers import ROOT, free_port, shax_server

app = create_app(Settings(max_body_bytes=1024 * 1024, max_peak_bytes=64 * 1024 * 1024))
schema = schemathesis.openapi.from_asgi("/openapi.json", app)


@schema.parametrize()
@settings(max_examples=20, deadline=None, suppress_health_check=list(HealthCheck))
def test_openapi_conformance(case):
    case.call_and_validate(
        checks=[
            not_a_server_error,
            status_code_conformance,
            content_type_conformance,
            response_schema_conformance,
        ]
    )


def test_schemathesis_cli_checks_all_finds_nothing(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    cli = Path(sys.executable).with_name("schemathesis")
    limits = {"SHAX_MAX_BODY_BYTES": str(1 << 20), "SHAX_MAX_PEAK_BYTES": str(64 << 20)}
    with shax_server(free_port(), limits) as url:
        done = subprocess.run(
            [str(cli), "run", f"{url}/openapi.json", "--checks", "all", "-n", "8", "-w", "1"]
            + ["--generation-deterministic"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=300,
        )
    assert done.returncode == 0, done.stdout[-4000:]
    assert "No issues found" in done.stdout or "passed" in done.stdout, done.stdout[-2000:]
