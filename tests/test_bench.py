"""`sdgate bench` at toy sizes: every section runs for real and reports what it should."""

import json

import pytest

from shared.bench import encoding, shapes
from shared.bench.timing import median, percentile
from shared.cli import main

TOY = ["--quick", "--size", "64", "--steps", "2"]


def test_percentiles_and_medians():
    assert percentile([0.1, 0.2, 0.3, 0.4], 50) == 0.2
    assert percentile(list(range(1, 101)), 95) == 95
    assert median([3, None, 1, 2]) == 2 and median([]) is None


def test_shapes_table_tolerates_missing_routes(client):
    present, missing = shapes.available(client.app)
    paths = {s.path for s in present}
    assert {"/txt2img", "/img2img", "/v1/draw"} <= paths
    assert not paths & {s.path for s in missing}
    assert len(present) + len(missing) == len(shapes.SHAPES)


def test_encoding_section_measures_every_format():
    rows = encoding.run(sizes=(64,), contents=("photo-like", "noise"), reps=1)["rows"]
    assert {r["format"] for r in rows} == {label for label, _ in encoding.FORMATS}
    assert all(r["encode_ms"] > 0 and r["kib"] > 0 for r in rows)
    png = {r["format"]: r["kib"] for r in rows if r["content"] == "photo-like"}
    assert png["png level 9"] <= png["png level 1 (sdgate default)"] < png["png level 0"]


def test_bench_engine_http_batching_and_ladder(tmp_path, capsys):
    out = tmp_path / "bench.json"
    main(["bench", *TOY, "--sections", "http,batching,arch", "--out", str(out),
          "--chart", str(tmp_path / "bench.png")])
    res = json.loads(out.read_text())
    rows = {r["path"]: r for r in res["http"]["rows"]}
    assert {"/txt2img", "/img2img", "/v1/draw"} <= set(rows)
    for path in ("/txt2img", "/img2img"):
        r = rows[path]
        assert r["ok"] and r["size"] == "64x64" and r["steps"] == 2
        assert r["engine_s"] > 0 and r["http_s"] > 0 and r["upload_s"] > 0
        assert r["other_s"] == pytest.approx(r["overhead_s"] - r["upload_s"] - r["queue_s"]
                                             - r["decode_s"] - r["base64_s"])
    assert rows["/img2img"]["decode_s"] > 0 and rows["/txt2img"]["decode_s"] == 0
    assert set(res["http"]["missing"]) == {s.path for s in shapes.SHAPES} - set(rows)
    batch = {r["how"]: r for r in res["batching"]["rows"]}
    assert batch["one pipeline call"]["pipeline_calls"] == 1
    assert batch["one pipeline call"]["max_pixel_diff"] <= 2
    assert res["batching"]["speedup"] > 0
    ladder = [r["rung"] for r in res["arch"]["rungs"]]
    assert ladder[0] == "fp32, classic attention" and "+ SDPA attention" in ladder
    assert ladder[-1].startswith("+ DeepCache") and not any("compile" in r for r in ladder)
    assert res["arch"]["unet_tflop"] > 0 and res["arch"]["peak_tflops"] is None  # CPU
    printed = capsys.readouterr().out
    assert "## Engine-only vs HTTP" in printed and "## GPU path ladder" in printed
    try:
        import matplotlib  # noqa: F401  (the `bench` extra)
    except ImportError:
        assert not (tmp_path / "bench.png").exists()
    else:
        assert (tmp_path / "bench.png").stat().st_size > 0


def test_bench_serving_cold_start_and_clients(tmp_path):
    out = tmp_path / "bench.json"
    main(["bench", *TOY, "--sections", "serving", "--out", str(out)])
    res = json.loads(out.read_text())["serving"]
    cold = res["cold_start"]
    assert cold["model_loads"] == 1 and cold["reloaded"] is False
    assert 0 < cold["ready_s"] < cold["first_image_s"] < cold["second_image_s"]
    assert [r["clients"] for r in res["load"]] == [1, 4]
    assert all(r["errors"] == 0 and r["requests"] == 4 for r in res["load"])
    # /health was probed while the clients kept the engine busy (a figure, not a timed test)
    assert all(r["health_p95_ms"] is not None and r["health_max_ms"] >= r["health_p95_ms"] > 0
               for r in res["load"])


def test_full_size_sdxl_is_not_built_on_a_cpu():
    from shared.bench import arch

    res = arch.run("sdxl", "cpu", None, None, reps=1)  # 14 GB in fp32: parameters only
    assert res["size"] == 1024 and res["steps"] == 30 and "rungs" not in res
    assert res["smoke"].startswith("skipped")
    assert res["parameters_m"]["unet"] == pytest.approx(2567.5, abs=0.1)


@pytest.mark.parametrize("arch_name, params_b, tflop", [("sd3", 2.03, (7, 12)),
                                                        ("flux", 11.9, (60, 95))])
def test_sd3_and_flux_rungs_count_parameters_and_flops_on_the_meta_device(arch_name, params_b,
                                                                          tflop):
    """SD3 medium and FLUX.1-dev from their published configs: parameters and FLOPs of one
    transformer forward at 1024² (4096 latent tokens + text tokens), nothing built for real."""
    from shared.bench import arch

    res = arch.run(arch_name, "cpu", None, None, reps=1)
    assert res["size"] == 1024 and res["steps"] == 28 and "rungs" not in res
    assert res["parameters_m"]["transformer"] / 1e3 == pytest.approx(params_b, abs=0.05)
    assert res["parameters_m"]["text_encoder_2" if arch_name == "flux" else "text_encoder_3"] \
        == pytest.approx(4762.3, abs=0.1)  # T5-XXL's encoder
    assert tflop[0] < res["transformer_tflop"] < tflop[1]
    assert res["cfg_passes"] == (1 if arch_name == "flux" else 2)
    assert res["vae_decode_tflop"] > 5  # the 16-channel VAE at 1024²


def test_bench_cli_takes_the_flow_archs(tmp_path, capsys):
    out = tmp_path / "bench.json"
    main(["bench", *TOY, "--sections", "arch", "--arch", "flux", "--out", str(out)])
    assert "transformer_tflop" in capsys.readouterr().out
    res = json.loads(out.read_text())["arch"]
    assert res["arch"] == "flux" and res["size"] == 64  # 16 image tokens + 512 text tokens
    assert 1 < res["transformer_tflop"] < 74
