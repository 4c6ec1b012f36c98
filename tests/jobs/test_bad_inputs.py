"""Every job refuses bad input the same way: one line naming the file, column, flag or variable, exit 2, no traceback.

One table, one row per bad input: corrupt, empty, not-parquet and mistyped files, a missing
column, no rows, out-of-range and malformed flags, and invalid environment variables, for
``score``, ``monitor``, ``retrain``, ``stream``, ``promote``, ``evaluate`` and ``train.py``. Each row runs the
command's ``main`` in-process (the same code path as the command line, without a new interpreter
per row; ``test_the_real_processes_refuse_the_same_way`` runs a few as real processes) and checks:

* the exit code is 2;
* exactly one line of the output is the error (a JSON log line at level ERROR, argparse's
  ``error:`` line on stderr, or the ``gate: error``/``retrain:`` summary line), and it names the
  file, column, flag or variable of the row;
* no traceback anywhere in stdout or stderr.

A second table covers unreachable dependencies: their documented exit code (1), one line, no
traceback, and the main output still written where there is one (``monitor --pushgateway``).
None of the rows needs a registry, a broker or Spark: inputs are checked before any of them is
contacted (``retrain`` and ``promote`` are pointed at a closed loopback port to show it).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import typing as t
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ride_duration import __main__ as jobs
from ride_duration.jobs import train
from tests.support import ROOT, free_port
from tests.synthetic import make_rides, write_month

BAD_INPUT = 2
ERROR = 1


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Good and bad TLC-shaped parquet files (and a TLC_DATA_DIR with bad months for retrain)."""
    tmp = tmp_path_factory.mktemp("bad-inputs")
    rides = make_rides(2000, seed=5)
    f = {"good": write_month(tmp / "good.parquet", n=2000, seed=5),
         "valid": write_month(tmp / "valid.parquet", n=2000, seed=6, month="2021-02")}
    table = pa.Table.from_pandas(rides, preserve_index=False)
    f["corrupt"] = corrupt_page(table, tmp / "corrupt.parquet")
    f["empty"] = tmp / "empty.parquet"
    f["empty"].write_bytes(b"")
    f["csv"] = tmp / "csv.parquet"
    f["csv"].write_text(rides.head(5).to_csv(index=False))
    f["no_distance"] = tmp / "no_distance.parquet"
    pq.write_table(table.drop_columns(["trip_distance"]), f["no_distance"])
    f["text_zone"] = tmp / "text_zone.parquet"
    rides.assign(PULocationID=rides["PULocationID"].astype(str)).to_parquet(f["text_zone"], index=False)
    f["text_distance"] = tmp / "text_distance.parquet"
    rides.assign(trip_distance="2.5 miles").to_parquet(f["text_distance"], index=False)
    f["text_time"] = tmp / "text_time.parquet"
    rides.assign(lpep_pickup_datetime=rides["lpep_pickup_datetime"].astype(str)).to_parquet(f["text_time"],
                                                                                              index=False)
    f["no_rows"] = tmp / "no_rows.parquet"
    rides.head(0).to_parquet(f["no_rows"], index=False)
    f["missing"] = tmp / "missing.parquet"
    f["full_dir"] = tmp / "full_dir"
    (f["full_dir"] / "part-0.parquet").parent.mkdir()
    (f["full_dir"] / "part-0.parquet").write_bytes(b"earlier results")
    months = tmp / "months"
    months.mkdir()
    for month, source in (("2030-01", "corrupt"), ("2030-02", "good"), ("2031-01", "text_zone"),
                          ("2031-02", "good")):
        (months / f"green_tripdata_{month}.parquet").write_bytes(f[source].read_bytes())
    f["months"] = months
    evaluate_files(tmp, f)
    return f


def evaluate_files(tmp: Path, f: dict[str, Path]) -> None:
    """A good prediction log and actuals for ``evaluate``, and bad ones beside them."""
    line = {"time": "2026-12-01T10:00:00Z", "role": "served", "ride_id": 1, "model_version": "m-v1",
            "trip_distance": 2.0, "prediction": 10.0}
    f["log"] = tmp / "log"
    f["log"].mkdir()
    (f["log"] / "predictions-1.jsonl").write_text(json.dumps(line) + "\n")
    f["log_no_ids"] = tmp / "log_no_ids"
    f["log_no_ids"].mkdir()
    (f["log_no_ids"] / "predictions-1.jsonl").write_text(json.dumps({**line, "ride_id": None}) + "\n")
    f["log_garbage"] = tmp / "log_garbage"
    f["log_garbage"].mkdir()
    (f["log_garbage"] / "predictions-1.jsonl").write_bytes(b"\x00\xff not json\n[1, 2]\n")
    f["log_empty"] = tmp / "log_empty"
    f["log_empty"].mkdir()
    f["actuals"] = tmp / "actuals.csv"
    f["actuals"].write_text("ride_id,actual_duration\n1,11.5\n")
    f["actuals_text"] = tmp / "actuals_text.csv"
    f["actuals_text"].write_text("ride_id,actual_duration\n1,eleven minutes\n")
    f["actuals_no_id"] = tmp / "actuals_no_id.csv"
    f["actuals_no_id"].write_text("actual_duration\n11.5\n")
    f["actuals_minutes"] = tmp / "actuals_minutes.csv"
    f["actuals_minutes"].write_text("ride_id,minutes\n1,11.5\n")
    f["actuals_header_only"] = tmp / "actuals_header_only.csv"
    f["actuals_header_only"].write_text("ride_id,actual_duration\n")
    f["actuals_fraction_ids"] = tmp / "actuals_fraction_ids.parquet"
    pq.write_table(pa.table({"ride_id": [1.5, 2.0], "actual_duration": [10.0, 12.0]}), f["actuals_fraction_ids"])
    f["report_blocker"] = tmp / "a-file"
    f["report_blocker"].write_text("not a directory")


def corrupt_page(table: pa.Table, path: Path) -> Path:
    """``table`` as snappy parquet with the middle of the ``trip_distance`` data page overwritten: the footer
    and schema are intact, reading the column is not."""
    pq.write_table(table, path, compression="snappy")
    chunk = pq.ParquetFile(path).metadata.row_group(0).column(table.schema.get_field_index("trip_distance"))
    blob = bytearray(path.read_bytes())
    middle = (chunk.dictionary_page_offset or chunk.data_page_offset) + chunk.total_compressed_size // 2
    blob[middle - 64:middle + 64] = bytes(128)
    path.write_bytes(bytes(blob))
    with pytest.raises((OSError, pa.ArrowException)):  # the fixture really is corrupt where the jobs read
        pq.read_table(path, columns=["trip_distance"])
    return path


def closed_url() -> str:
    return f"http://127.0.0.1:{free_port()}"


Args = t.Callable[[dict[str, Path]], list[str]]
# (id, command: "jobs" for python -m ride_duration / "train" for train.py, argv, extra env, what the line names)
CASES: list[tuple[str, str, Args, dict[str, str], str]] = [
    # ---- score
    ("score-corrupt-page", "jobs", lambda f: ["score", "--input", str(f["corrupt"]), "--output", "{out}"], {},
     "corrupt.parquet"),
    ("score-empty-file", "jobs", lambda f: ["score", "--input", str(f["empty"]), "--output", "{out}"], {},
     "empty.parquet"),
    ("score-not-parquet", "jobs", lambda f: ["score", "--input", str(f["csv"]), "--output", "{out}"], {},
     "csv.parquet"),
    ("score-missing-file", "jobs", lambda f: ["score", "--input", str(f["missing"]), "--output", "{out}"], {},
     "missing.parquet"),
    ("score-missing-column", "jobs", lambda f: ["score", "--input", str(f["no_distance"]), "--output", "{out}"],
     {}, "trip_distance"),
    ("score-text-zone", "jobs", lambda f: ["score", "--input", str(f["text_zone"]), "--output", "{out}"], {},
     "PULocationID is string"),
    ("score-text-distance", "jobs", lambda f: ["score", "--input", str(f["text_distance"]), "--output", "{out}"],
     {}, "trip_distance is string"),
    ("score-chunk-rows-0", "jobs", lambda f: ["score", "--input", str(f["good"]), "--output", "{out}",
                                              "--chunk-rows", "0"], {}, "--chunk-rows"),
    ("score-chunk-rows-text", "jobs", lambda f: ["score", "--input", str(f["good"]), "--output", "{out}",
                                                 "--chunk-rows", "many"], {}, "--chunk-rows"),
    ("score-unknown-engine", "jobs", lambda f: ["score", "--input", str(f["good"]), "--output", "{out}",
                                                "--engine", "dask"], {}, "--engine"),
    ("score-output-is-a-dir", "jobs", lambda f: ["score", "--input", str(f["good"]), "--output",
                                                 str(f["full_dir"])], {}, "--output"),
    ("score-spark-non-empty-output", "jobs", lambda f: ["score", "--engine", "spark", "--input", str(f["good"]),
                                                        "--output", str(f["full_dir"])], {}, "--overwrite"),
    ("score-env-max-batch-size", "jobs", lambda f: ["score", "--input", str(f["good"]), "--output", "{out}"],
     {"MAX_BATCH_SIZE": "0"}, "MAX_BATCH_SIZE"),
    # ---- monitor
    ("monitor-corrupt-reference", "jobs", lambda f: ["monitor", "--reference", str(f["corrupt"]), "--current",
                                                     str(f["good"]), "--report-dir", "{out}"], {}, "corrupt.parquet"),
    ("monitor-text-zone", "jobs", lambda f: ["monitor", "--reference", str(f["good"]), "--current",
                                             str(f["text_zone"]), "--report-dir", "{out}"], {}, "PULocationID"),
    ("monitor-no-rows", "jobs", lambda f: ["monitor", "--reference", str(f["good"]), "--current",
                                           str(f["no_rows"]), "--report-dir", "{out}"], {}, "no_rows.parquet"),
    ("monitor-missing-file", "jobs", lambda f: ["monitor", "--reference", str(f["missing"]), "--current",
                                                str(f["good"]), "--report-dir", "{out}"], {}, "missing.parquet"),
    ("monitor-sample-rows-0", "jobs", lambda f: ["monitor", "--reference", str(f["good"]), "--current",
                                                 str(f["good"]), "--report-dir", "{out}", "--sample-rows", "0"], {},
     "--sample-rows"),
    ("monitor-env-log-level", "jobs", lambda f: ["monitor", "--reference", str(f["good"]), "--current",
                                                 str(f["good"]), "--report-dir", "{out}"], {"LOG_LEVEL": "LOUD"},
     "LOG_LEVEL"),
    # ---- retrain (a closed port as registry: the months are read, and refused, before it is asked)
    ("retrain-corrupt-month", "jobs", lambda f: ["retrain", "--month", "2030-01"],
     {"TLC_DATA_DIR": "{months}", "TLC_DOWNLOAD": "false", "MLFLOW_TRACKING_URI": "{closed}"},
     "green_tripdata_2030-01.parquet"),
    ("retrain-text-zone-month", "jobs", lambda f: ["retrain", "--month", "2031-01"],
     {"TLC_DATA_DIR": "{months}", "TLC_DOWNLOAD": "false", "MLFLOW_TRACKING_URI": "{closed}"}, "PULocationID"),
    ("retrain-month-13", "jobs", lambda f: ["retrain", "--month", "2023-13"], {}, "--month"),
    ("retrain-sample-rows-negative", "jobs", lambda f: ["retrain", "--month", "2030-01", "--sample-rows", "-5"], {},
     "--sample-rows"),
    ("retrain-env-tlc-download", "jobs", lambda f: ["retrain", "--month", "2030-01"], {"TLC_DOWNLOAD": "maybe"},
     "TLC_DOWNLOAD"),
    # ---- stream (refused before any broker is contacted)
    ("stream-batch-size-0", "jobs", lambda f: [*STREAM, "--batch-size", "0"], {}, "--batch-size"),
    ("stream-batch-wait-negative", "jobs", lambda f: [*STREAM, "--batch-wait", "-1"], {}, "--batch-wait"),
    ("stream-metrics-port-70000", "jobs", lambda f: [*STREAM, "--metrics-port", "70000"], {}, "--metrics-port"),
    ("stream-source-not-kafka", "jobs", lambda f: ["stream", "--source", "http://x/rides", *STREAM[3:]], {},
     "--source"),
    ("stream-model-uri-without-registry", "jobs", lambda f: [*STREAM, "--model-uri", "models:/m@production"], {},
     "--model-uri"),
    ("stream-env-batch-size", "jobs", lambda f: STREAM, {"STREAM_BATCH_SIZE": "0"}, "STREAM_BATCH_SIZE"),
    ("stream-shadow-sample-rate-2", "jobs", lambda f: [*STREAM, "--shadow-sample-rate", "2"], {},
     "--shadow-sample-rate"),
    ("stream-shadow-sink-without-shadow", "jobs", lambda f: [*STREAM, "--shadow-sink", "kafka://127.0.0.1:1/s"], {},
     "--shadow-sink"),
    # ---- promote (inputs first: the registry on a closed port is never asked)
    ("promote-skips-an-environment", "jobs", lambda f: ["promote", "--from", "dev", "--to", "accept"],
     {"MLFLOW_TRACKING_URI": "{closed}"}, "--to accept"),
    ("promote-unknown-environment", "jobs", lambda f: ["promote", "--from", "dev", "--to", "staging"], {}, "--to"),
    ("promote-corrupt-valid-data", "jobs", lambda f: ["promote", "--from", "dev", "--to", "test", "--valid-data",
                                                      str(f["corrupt"])], {"MLFLOW_TRACKING_URI": "{closed}"},
     "corrupt.parquet"),
    ("promote-text-distance-valid-data", "jobs", lambda f: ["promote", "--from", "dev", "--to", "test",
                                                            "--valid-data", str(f["text_distance"])],
     {"MLFLOW_TRACKING_URI": "{closed}"}, "trip_distance"),
    # ---- evaluate (refused before any broker is contacted: the Kafka sources point at a closed port)
    ("evaluate-corrupt-actuals", "jobs", lambda f: [*EVALUATE(f), "--actuals", str(f["corrupt"])], {},
     "corrupt.parquet"),
    ("evaluate-empty-actuals", "jobs", lambda f: [*EVALUATE(f), "--actuals", str(f["empty"])], {}, "empty.parquet"),
    ("evaluate-not-parquet-actuals", "jobs", lambda f: [*EVALUATE(f), "--actuals", str(f["csv"])], {},
     "csv.parquet"),
    ("evaluate-missing-actuals", "jobs", lambda f: [*EVALUATE(f), "--actuals", str(f["missing"])], {},
     "missing.parquet"),
    ("evaluate-text-duration", "jobs", lambda f: [*EVALUATE(f), "--actuals", str(f["actuals_text"])], {},
     "actual_duration is object"),
    ("evaluate-actuals-without-ride-id", "jobs", lambda f: [*EVALUATE(f), "--actuals", str(f["actuals_no_id"])],
     {}, "ride_id"),
    ("evaluate-actuals-no-rows", "jobs", lambda f: [*EVALUATE(f), "--actuals", str(f["actuals_header_only"])], {},
     "actuals_header_only.csv: no rows"),
    ("evaluate-fractional-ride-ids", "jobs", lambda f: [*EVALUATE(f), "--actuals", str(f["actuals_fraction_ids"])],
     {}, "ride_id is float64"),
    ("evaluate-tlc-text-time", "jobs", lambda f: [*EVALUATE(f), "--actuals", str(f["text_time"])], {},
     "lpep_pickup_datetime is"),
    ("evaluate-tlc-no-rows", "jobs", lambda f: [*EVALUATE(f), "--actuals", str(f["no_rows"])], {},
     "no_rows.parquet: no rows"),
    ("evaluate-actuals-neither-shape", "jobs", lambda f: [*EVALUATE(f), "--actuals", str(f["actuals_minutes"])], {},
     "needs ride_id and actual_duration"),
    ("evaluate-missing-log", "jobs", lambda f: [*EVALUATE(f, str(f["missing"].with_suffix(""))), "--actuals",
                                                str(f["actuals"])], {}, "--predictions"),
    ("evaluate-empty-log-dir", "jobs", lambda f: [*EVALUATE(f, str(f["log_empty"]), kafka=False), "--actuals",
                                                  str(f["actuals"])], {}, "log_empty"),
    ("evaluate-garbage-log", "jobs", lambda f: [*EVALUATE(f, str(f["log_garbage"]), kafka=False), "--actuals",
                                                str(f["actuals"])], {}, "log_garbage"),
    ("evaluate-log-without-ride-ids", "jobs", lambda f: [*EVALUATE(f, str(f["log_no_ids"]), kafka=False),
                                                         "--actuals", str(f["actuals"])], {}, "without a ride_id"),
    ("evaluate-report-dir-is-a-file", "jobs", lambda f: ["evaluate", "--predictions", str(f["log"]), "--actuals",
                                                         str(f["actuals"]), "--report-dir",
                                                         str(f["report_blocker"])], {}, "--report-dir"),
    ("evaluate-predictions-not-kafka", "jobs", lambda f: [*EVALUATE(f, "kafka:/127.0.0.1/x"), "--actuals",
                                                          str(f["actuals"])], {}, "--predictions"),
    ("evaluate-kafka-timeout-0", "jobs", lambda f: [*EVALUATE(f), "--actuals", str(f["actuals"]),
                                                    "--kafka-timeout", "0"], {}, "--kafka-timeout"),
    ("evaluate-group-empty", "jobs", lambda f: [*EVALUATE(f), "--actuals", str(f["actuals"]), "--group", ""], {},
     "--group"),
    ("evaluate-no-actuals-flag", "jobs", lambda f: EVALUATE(f), {}, "--actuals"),
    ("evaluate-env-kafka-timeout", "jobs", lambda f: [*EVALUATE(f), "--actuals", str(f["actuals"])],
     {"EVALUATE_KAFKA_TIMEOUT": "soon"}, "EVALUATE_KAFKA_TIMEOUT"),
    # ---- train.py
    ("train-missing-file", "train", lambda f: ["--train-data", str(f["missing"]), "--valid-data", str(f["valid"])],
     {}, "--train-data"),
    ("train-corrupt-page", "train", lambda f: ["--train-data", str(f["corrupt"]), "--valid-data", str(f["valid"])],
     {}, "corrupt.parquet"),
    ("train-empty-file", "train", lambda f: ["--train-data", str(f["good"]), "--valid-data", str(f["empty"])], {},
     "empty.parquet"),
    ("train-missing-column", "train", lambda f: ["--train-data", str(f["no_distance"]), "--valid-data",
                                                 str(f["valid"])], {}, "trip_distance"),
    ("train-text-pickup-time", "train", lambda f: ["--train-data", str(f["good"]), "--valid-data",
                                                   str(f["text_time"])], {}, "lpep_pickup_datetime"),
    ("train-text-zone", "train", lambda f: ["--train-data", str(f["text_zone"]), "--valid-data", str(f["valid"])],
     {}, "PULocationID"),
    ("train-no-rows", "train", lambda f: ["--train-data", str(f["no_rows"]), "--valid-data", str(f["valid"])], {},
     "no_rows.parquet"),
    ("train-alpha-negative", "train", lambda f: ["--alpha", "-1"], {}, "--alpha"),
    ("train-max-miles-0", "train", lambda f: ["--max-miles", "0"], {}, "--max-miles"),
    ("train-max-miles-nan", "train", lambda f: ["--max-miles", "nan"], {}, "--max-miles"),
    ("train-gate-against-missing", "train", lambda f: ["--train-data", str(f["good"]), "--valid-data",
                                                       str(f["valid"]), "--gate-against", str(f["missing"])], {},
     "--gate-against"),
    ("train-env-log-level", "train", lambda f: ["--train-data", str(f["good"]), "--valid-data", str(f["valid"])],
     {"LOG_LEVEL": "chatty"}, "LOG_LEVEL"),
]
STREAM = ["stream", "--source", "kafka://127.0.0.1:1/rides", "--sink", "kafka://127.0.0.1:1/out",
          "--dead-letter", "kafka://127.0.0.1:1/dead"]


def EVALUATE(f: dict[str, Path], log: str | None = None, kafka: bool = True) -> list[str]:  # noqa: N802 - as STREAM
    """``evaluate`` with a prediction log (and a topic on a closed port: inputs are refused before a broker is
    asked), the report in ``{out}``."""
    topic = ["--predictions", "kafka://127.0.0.1:1/predictions"] if kafka else []
    return ["evaluate", "--predictions", log or str(f["log"]), *topic, "--report-dir", "{out}"]


def fill(text: str, files: dict[str, Path], tmp_path: Path, closed: str) -> str:
    return text.replace("{out}", str(tmp_path / "out")).replace("{months}", str(files["months"])).replace(
        "{closed}", closed)


def run_in_process(command: str, argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    main = train.main if command == "train" else jobs.main
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse refuses a flag by exiting
        code = exc.code if isinstance(exc.code, int) else 1
    out, err = capsys.readouterr()
    return code, out, err


def error_lines(out: str, err: str) -> list[str]:
    """The lines that report an error: JSON log lines at level ERROR, argparse's ``error:`` line, and the
    ``gate:``/``retrain:`` summaries of promote and retrain that are errors."""
    found = [line for line in err.splitlines() if "error:" in line]
    for line in out.splitlines():
        if line.startswith("{"):
            if json.loads(line).get("level") == "ERROR":
                found.append(line)
        elif line.startswith(("gate: error", "retrain: error", "retrain: bad input", "retrain: no data")):
            found.append(line)
    return found


def assert_one_clean_line(out: str, err: str, names: str) -> str:
    assert "Traceback" not in out + err, out + err
    lines = error_lines(out, err)
    assert len(lines) == 1, f"expected one error line naming {names!r}, got: {lines}\n{out[-3000:]}\n{err[-3000:]}"
    line = lines[0]
    message = json.loads(line)["message"] if line.startswith("{") else line
    assert names in message, message
    assert "\n" not in message
    return message


@pytest.mark.parametrize(("command", "argv", "env", "names"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_a_bad_input_is_one_line_and_exit_2(command, argv, env, names, files, tmp_path, capsys, monkeypatch):
    closed = closed_url()
    for key, value in env.items():
        monkeypatch.setenv(key, fill(value, files, tmp_path, closed))
    if not {"MLFLOW_TRACKING_URI"} & set(env):
        monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)  # train.py's default --output-dir model/ must not be the repository's

    code, out, err = run_in_process(command, [fill(a, files, tmp_path, closed) for a in argv(files)], capsys)

    assert code == BAD_INPUT, (code, out[-3000:], err[-3000:])
    assert_one_clean_line(out, err, names)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
    assert not (tmp_path / "model").exists()


def test_the_spark_output_directory_is_left_alone(files, tmp_path, capsys):
    """The refusal above happens before anything is written: the earlier results are still there."""
    code, _, _ = run_in_process("jobs", ["score", "--engine", "spark", "--input", str(files["good"]),
                                         "--output", str(files["full_dir"])], capsys)
    assert code == BAD_INPUT
    assert (files["full_dir"] / "part-0.parquet").read_bytes() == b"earlier results"


# ---- unreachable dependencies: their own exit code, one line, the main output still written --------

def test_monitor_writes_the_report_when_the_pushgateway_is_down(files, tmp_path, capsys):
    gateway = f"127.0.0.1:{free_port()}"
    code, out, err = run_in_process("jobs", ["monitor", "--reference", str(files["good"]), "--current",
                                             str(files["valid"]), "--report-dir", str(tmp_path / "r"),
                                             "--pushgateway", gateway], capsys)

    assert code == ERROR, (out[-3000:], err[-3000:])
    assert_one_clean_line(out, err, f"--pushgateway {gateway}")
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    assert report["current"]["rows"] == 2000
    assert (tmp_path / "r" / "metrics.prom").is_file()


def test_evaluate_with_the_broker_down_exits_1(files, tmp_path, capsys):
    topic = f"kafka://127.0.0.1:{free_port()}/predictions"
    code, out, err = run_in_process("jobs", ["evaluate", "--predictions", str(files["log"]), "--predictions", topic,
                                             "--actuals", str(files["actuals"]), "--report-dir", str(tmp_path / "r"),
                                             "--kafka-timeout", "2"], capsys)

    assert code == ERROR, (out[-3000:], err[-3000:])
    assert_one_clean_line(out, err, f"cannot reach the broker of {topic}")
    assert not (tmp_path / "r").exists()


def test_train_with_an_unreachable_url_exits_1(files, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    url = f"{closed_url()}/green_tripdata_2021-01.parquet"
    code, out, err = run_in_process("train", ["--train-data", url, "--valid-data", str(files["valid"])], capsys)

    assert code == ERROR, (out[-3000:], err[-3000:])
    assert_one_clean_line(out, err, "cannot download")
    assert not (tmp_path / "model").exists()


def test_score_with_an_unloadable_model_exits_1(files, tmp_path, capsys):
    code, out, err = run_in_process("jobs", ["score", "--input", str(files["good"]), "--output",
                                             str(tmp_path / "p.parquet"), "--model-path", str(files["csv"])], capsys)
    assert code == ERROR
    assert_one_clean_line(out, err, "--model-path")


def test_debug_shows_the_traceback_of_an_unexpected_error(files, tmp_path, capsys, monkeypatch):
    """Without ``--debug`` an unexpected failure is one line; with it, the traceback is not hidden."""
    from ride_duration.jobs import score

    def broken(*args: t.Any, **kwargs: t.Any) -> t.NoReturn:
        raise RuntimeError("a bug")

    monkeypatch.setattr(score, "score_file", broken)
    argv = ["score", "--input", str(files["good"]), "--output", str(tmp_path / "p.parquet")]
    code, out, err = run_in_process("jobs", argv, capsys)
    assert code == ERROR
    assert "RuntimeError: a bug" in assert_one_clean_line(out, err, "--debug")
    with pytest.raises(RuntimeError, match="a bug"):
        jobs.main(["--debug", *argv])


# ---- the real processes ------------------------------------------------------------------------

@pytest.mark.parametrize(("argv", "env", "names"), [
    (["-m", "ride_duration", "score", "--input", "{corrupt}", "--output", "{out}"], {}, "corrupt.parquet"),
    (["-m", "ride_duration", "stream", *STREAM[1:], "--batch-size", "0"], {}, "--batch-size"),
    (["train.py", "--train-data", "{text_zone}", "--valid-data", "{good}"], {"MAX_BATCH_SIZE": "-3"},
     "MAX_BATCH_SIZE"),
], ids=["score-corrupt", "stream-flag", "train-env"])
def test_the_real_processes_refuse_the_same_way(argv, env, names, files, tmp_path):
    argv = [a.replace("{corrupt}", str(files["corrupt"])).replace("{good}", str(files["good"]))
            .replace("{text_zone}", str(files["text_zone"])).replace("{out}", str(tmp_path / "out")) for a in argv]
    environ = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    done = subprocess.run([sys.executable, *argv], cwd=ROOT, env={**environ, **env}, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == BAD_INPUT, done.stdout[-3000:] + done.stderr[-3000:]
    assert_one_clean_line(done.stdout, done.stderr, names)
