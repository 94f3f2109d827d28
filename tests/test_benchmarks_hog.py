"""benchmarks/bench_hog.py: the report (no timing is asserted)."""


import pytest


@pytest.fixture(scope="module")
def bench_hog(load_benchmark):
    return load_benchmark("bench_hog")


def test_the_report_gives_each_contenders_run_count(bench_hog, monkeypatch, capsys, tmp_path):
    pytest.importorskip("skimage")
    runs = []

    def fake_median_seconds(fn, repeats):
        runs.append(repeats)
        return 1.0, 1.0

    monkeypatch.setattr(bench_hog, "median_seconds", fake_median_seconds)
    monkeypatch.setattr(bench_hog.jitnet, "available_targets", lambda: ["numpy", "cpu"])
    bench_hog.main(["--n", "2", "--repeats", "8", "--skimage-repeats", "1",
                    "--data-dir", str(tmp_path)])
    assert runs == [4, 8, 1]
    header, *rows = capsys.readouterr().out.splitlines()[2:]
    assert header[16:].split()[4] == "runs"  # after "median ms", "CPU ms"
    counts = {row[:16].strip(): row[16:].split()[2] for row in rows}
    assert counts == {"jitnet numpy": "4", "jitnet cpu": "8", "skimage loop": "1"}
