"""A configured source that cannot be reached is a failure, never a quiet tick.

The pulled retailers' sources (the API, the PostgreSQL warehouse) and the SFTP landing server point
at loopback ports nothing listens on. Their sensors' ticks fail, naming each retailer, the host and
the reason, with the planted password masked; a retailer whose delivery is reachable still gets its
run from the same tick; a source whose settings are missing here is only noted. (`pos-lakehouse
run`'s summary and exit code: `test_secret_redaction.py` runs it against these ports.)
"""

from __future__ import annotations

import dagster as dg
import pytest
import yaml
from demo_defs import write_demo_defs
from ports import free_port

from pos_lakehouse.ingest.reachability import SourcesUnreachable

PASSWORD = "unreachable-MARKER-93ab"


@pytest.fixture
def dead_sources(data_root, tmp_path, monkeypatch):
    """The test's own defs folder (API retries made quick) with every remote source on a closed loopback port."""
    root = write_demo_defs(tmp_path / "defs")
    shop = root / "retailers" / "shopnow_us" / "defs.yaml"
    doc = yaml.safe_load(shop.read_text())
    doc["attributes"]["delivery"]["api"].update({"max_retries": 1, "backoff_seconds": 0.0, "timeout_seconds": 5})
    shop.write_text(yaml.safe_dump(doc, sort_keys=False))
    monkeypatch.setenv("POS_LAKEHOUSE_DEFS_DIR", str(root))
    ports = {"api": free_port(), "db": free_port(), "sftp": free_port()}
    monkeypatch.setenv("SHOPNOW_API_URL", f"http://apiuser:{PASSWORD}@127.0.0.1:{ports['api']}/")
    monkeypatch.setenv("SHOPNOW_API_TOKEN", "token-" + PASSWORD)
    monkeypatch.setenv("HIGHSTREET_DB_URL", f"postgresql+psycopg://highstreet:{PASSWORD}@127.0.0.1:{ports['db']}/warehouse")
    monkeypatch.setenv("KAUFHALLE_SFTP_HOST", "127.0.0.1")
    monkeypatch.setenv("KAUFHALLE_SFTP_PORT", str(ports["sftp"]))
    monkeypatch.setenv("KAUFHALLE_SFTP_PASSWORD", PASSWORD)
    return ports


def _sensors(kind: str):
    from pos_lakehouse.definitions import build_definitions

    defs = build_definitions()
    return defs, [s for s in defs.sensors if s.name.endswith(kind)]


def _tick(defs, sensor, instance):
    with dg.build_sensor_context(instance=instance, definitions=defs, sensor_name=sensor.name, resources=defs.resources) as context:
        return sensor(context)


def test_unreachable_pulled_sources_fail_the_poll_tick(dead_sources, instance):
    defs, polls = _sensors("_poll_sensor")
    assert polls
    failures = []
    for sensor in polls:
        with pytest.raises(SourcesUnreachable) as info:
            _tick(defs, sensor, instance)
        failures.append(info.value)
    said = " ".join(str(f) for f in failures)
    assert sorted(r for f in failures for r in f.retailers) == ["highstreet_uk", "shopnow_us"]
    # Each names its retailer first, then the host and port and the reason; the password is masked.
    assert all(str(f).startswith(f"source unreachable for {', '.join(f.retailers)}: ") for f in failures)
    assert f"127.0.0.1:{dead_sources['api']}" in said and f"127.0.0.1:{dead_sources['db']}" in said
    assert said.lower().count("refused") >= 2, said
    assert PASSWORD not in said


def test_unreachable_sftp_fails_the_landing_tick_but_not_the_others_runs(dead_sources, data_root, instance):
    defs, (landing,) = _sensors("retailer_landing_sensor")
    with pytest.raises(SourcesUnreachable) as info:
        _tick(defs, landing, instance)
    assert info.value.retailers == ["kaufhalle_de"]
    assert f"127.0.0.1:{dead_sources['sftp']}" in str(info.value) and PASSWORD not in str(info.value)

    # A delivery of another retailer in the same tick still becomes its run (the dead server is logged).
    folder = data_root / "landing" / "polder_nl"
    folder.mkdir(parents=True, exist_ok=True)
    from pos_lakehouse.demo.file_retailers import write_polder_nl

    write_polder_nl(folder, data_root / "expected", weeks=1, n_products=5, n_stores=2)
    result = _tick(defs, landing, instance)
    assert {r.tags["retailer"] for r in result.run_requests} == {"polder_nl"}


def test_a_source_not_configured_here_is_noted_not_failed(dead_sources, instance, monkeypatch):
    for name in ("SHOPNOW_API_URL", "HIGHSTREET_DB_URL"):
        monkeypatch.delenv(name)
    defs, polls = _sensors("_poll_sensor")
    said = []
    for sensor in polls:
        result = _tick(defs, sensor, instance)
        assert not result.run_requests
        said.append(result.skip_reason.skip_message)
    said = "; ".join(said)
    assert "'SHOPNOW_API_URL'" in said and "warehouse.sqlite does not exist" in said, said
