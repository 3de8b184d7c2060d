"""`make bench` end to end at a tiny size: every figure is produced and the ledger still balances afterwards.

Speed is never asserted here (the machine is shared); only that the tooling runs and writes its section of
BENCHMARKS.md without touching the rest of the file.
"""

from tools.bench import report, run


def test_bench_tooling_produces_every_figure_and_keeps_the_rest_of_the_file(tmp_path, service_env):
    output = tmp_path / "BENCHMARKS.md"
    output.write_text("# Benchmarks\n\n<!-- timeseries:begin -->\nkept as it is\n<!-- timeseries:end -->\n")
    figures = run.main(["--rest-seconds", "1", "--rounds", "1", "--connections", "2", "--rest-users", "2",
                        "--history", "3", "--fills", "200", "--event-users", "5", "--latency-seconds", "1",
                        "--timeout", "60", "--streams", "10", "--stream-rate", "20", "--stream-seconds", "1",
                        "--output", str(output), "--note", str(tmp_path / "no-note.md")])

    for operation in run.rest.OPERATIONS:
        for target in ("ours", "ceiling"):
            measured = figures["rest"][operation][target]
            assert measured["requests"] > 0 and measured["rps"] > 0, (operation, target, measured)
            assert measured["non_2xx"] == 0, (operation, target, measured)
    events = figures["events"]
    for consumers in (1, 2):
        measured = events["runs"][consumers]
        assert measured["throughput"]["events"] == 200 and measured["throughput"]["fills_per_s"] > 0
        assert measured["latency"]["events"] >= 50 and measured["latency"]["p99_ms"] > 0
        assert measured["rss_mb"] > 0
    for ceiling in ("ceiling", "database"):
        assert events[ceiling]["events"] == 200 and events[ceiling]["fills_per_s"] > 0
    assert figures["rest"]["rss_mb"] > 0
    stream = figures["stream"]
    assert stream["streams"] == 10 and stream["refused"] == 0 and stream["held_rss_mb"] > 0
    assert stream["bookings"] > 0 and stream["deliveries"] == stream["expected_deliveries"]
    assert stream["worker_cpu_ms_per_booking"] > 0
    assert figures["ledger_consistent"] is True

    text = output.read_text()
    assert "<!-- timeseries:begin -->\nkept as it is\n<!-- timeseries:end -->" in text
    assert text.count(report.BEGIN) == 1 and text.count(report.END) == 1
    assert "two `tiris consume`" in text and "the database's own limit" in text and "SSE streams held by one API worker" in text
    assert "the API worker's CPU per booking" in text
