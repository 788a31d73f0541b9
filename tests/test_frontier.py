"""The CPU frontier's candidate networks (re-parameterised, refined, NAF-block KPNs) and ``derain bench frontier``."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

import derain
from derain.bench import frontier
from derain.bench.frontier import CANDIDATES, frontier_table, inference_form, run_frontier
from derain.models.efderain import EfDeRain, EfDeRainConfig
from derain.models.efderain_naf import NAFBlock, NAFEfDeRain
from derain.models.efderain_refine import RefineEfDeRain, RefineEfDeRainConfig, Refinement
from derain.models.efderain_rep import RepConv, RepEfDeRain, RepEfDeRainConfig
from derain.models.registry import model_spec

SMALL = dict(widths=(8, 8, 8), depth=1, stem=2, kernel_level=0, outc_at_full_resolution=False, identity_init=True,
             channel_fusion=True, gate=True, gate_global=True)


def perturb(model: torch.nn.Module, scale: float = 0.05, seed: int = 0) -> torch.nn.Module:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * scale)
    return model


class TestRepConv:
    def test_branches_equal_the_folded_convolution_at_every_pixel(self) -> None:
        """Training (branches) and inference (one 3×3) compute the same function, borders included."""
        for cin, cout in [(4, 4), (3, 8)]:
            conv = perturb(RepConv(cin, cout), 0.2)
            x = torch.rand(2, cin, 9, 11)
            conv.train()
            branches = conv(x)
            conv.eval()
            torch.testing.assert_close(conv(x), branches, rtol=1e-5, atol=1e-5)
            assert (branches - conv.conv3(x)).abs().max() > 0.05  # the other branches contribute

    def test_identity_branch_only_where_widths_match(self) -> None:
        assert RepConv(4, 4).identity and not RepConv(3, 4).identity


class TestRepEfDeRain:
    def test_fold_gives_the_plain_network_with_the_same_output(self) -> None:
        model = perturb(RepEfDeRain(RepEfDeRainConfig(**SMALL)))
        x = torch.rand(2, 3, 23, 37)
        model.train()
        with torch.no_grad():
            trained_form = model(x)
        plain = model.fold()
        assert type(plain) is EfDeRain and plain.config == EfDeRainConfig(**SMALL) and not plain.training
        with torch.no_grad():
            torch.testing.assert_close(plain(x), trained_form, rtol=1e-4, atol=1e-5)
        assert set(plain.state_dict()) == set(EfDeRain(EfDeRainConfig(**SMALL)).state_dict())

    def test_fold_leaves_the_model_as_it_was(self) -> None:
        model = perturb(RepEfDeRain(RepEfDeRainConfig(**SMALL))).train()
        before = {k: v.clone() for k, v in model.state_dict().items()}
        model.fold()
        assert model.training and all(torch.equal(before[k], v) for k, v in model.state_dict().items())

    def test_inference_runs_it_folded(self, tmp_path) -> None:
        """The loading seam and the ONNX export run the folded network: a saved re-parameterised model's file loads and runs
        as plain EfDeRain, with the same output as the branches."""
        model = perturb(RepEfDeRain(RepEfDeRainConfig(**SMALL)))
        derain.save_model(model, tmp_path / "rep.safetensors")
        runner = derain.load_derainer(tmp_path / "rep.safetensors", precision="fp32")
        assert type(runner.model) is EfDeRain and type(model) is RepEfDeRain and model.training  # the caller's stays
        x = torch.rand(1, 3, 21, 34)
        with torch.no_grad():
            expected = model.train()(x)
        torch.testing.assert_close(runner.run_tensor(x), expected.clamp(0, 1), rtol=1e-4, atol=1e-5)  # the runner clamps

    @pytest.mark.parametrize("init", ["released", "he"])
    def test_starts_as_the_plain_network(self, init: str) -> None:
        """Each block's branches (identity included) start summing to the plain layer's init, so a re-parameterised
        network starts as its plain twin would and He's init keeps its scale (with the identity on top it grew)."""
        cfg = {**SMALL, "depth": 2, "init": init}
        torch.manual_seed(0)
        rep = RepEfDeRain(RepEfDeRainConfig(**cfg)).eval()
        torch.manual_seed(0)
        plain = EfDeRain(EfDeRainConfig(**cfg)).eval()
        x = torch.rand(1, 3, 32, 32)
        with torch.no_grad():
            torch.testing.assert_close(rep.fold()(x), plain(x), rtol=1e-4, atol=1e-5)

    def test_registered_candidate_folds_into_efderain_cpu(self) -> None:
        model = derain.create_model("efderain-cpu-rep")
        plain = inference_form(model)
        assert plain.config == derain.create_model("efderain-cpu").config
        assert sum(p.numel() for p in plain.parameters()) < sum(p.numel() for p in model.parameters())


def open_gate(model: RefineEfDeRain) -> RefineEfDeRain:
    """Random weights close the per-pixel gate (logits far below 0); open it so the refinement shows."""
    with torch.no_grad():
        model.gate.weight.zero_()
        model.gate.bias.fill_(2.0)  # times GATE_GAIN: logit 20
    return model


@pytest.mark.parametrize("refine_input", ["filtered", "both"])
class TestRefineEfDeRain:
    def test_starts_as_its_efderain(self, refine_input: str) -> None:
        """The refinement's last convolution starts at zero: the untrained network is its EfDeRain part."""
        cfg = RefineEfDeRainConfig(**SMALL, refine_width=8, refine_input=refine_input)
        model = open_gate(perturb(RefineEfDeRain(cfg))).eval()
        plain = EfDeRain(EfDeRainConfig(**SMALL)).eval()
        plain.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith("refine.")})
        x = torch.rand(1, 3, 30, 41)
        with torch.no_grad():
            assert (model(x) - plain(x)).abs().max() > 1e-4  # perturbed: the refinement acts
            model.refine.body[-1].weight.zero_()
            model.refine.body[-1].bias.zero_()
            torch.testing.assert_close(model(x), plain(x), rtol=1e-5, atol=1e-5)

    def test_a_closed_gate_returns_the_input(self, refine_input: str) -> None:
        """The refinement is gated like the filtering: an image judged dry (whole = 0) comes back exactly."""
        model = open_gate(perturb(RefineEfDeRain(RefineEfDeRainConfig(**SMALL, refine_width=8, refine_input=refine_input)), 0.2)).eval()
        x = torch.rand(2, 3, 30, 41)
        with torch.no_grad():
            assert torch.equal(model(x, whole=torch.zeros(2, 1)), x)
            assert (model(x, whole=torch.ones(2, 1)) - x).abs().max() > 1e-3  # and acts where it is open

    def test_reaches_past_the_filtering(self, refine_input: str) -> None:
        """A change of one input pixel moves output pixels more than 5 px away (the filtering alone: at most 5)."""
        model = open_gate(perturb(RefineEfDeRain(RefineEfDeRainConfig(**SMALL, refine_width=8, refine_input=refine_input)), 0.2)).eval()
        x = torch.rand(1, 3, 64, 64)
        y = x.clone()
        y[..., 32, 32] += 0.5
        with torch.no_grad():
            diff = (model(y, whole=torch.ones(1, 1)) - model(x, whole=torch.ones(1, 1))).abs().amax(1)[0]
        rows, cols = torch.nonzero(diff > 1e-6, as_tuple=True)
        assert max((rows - 32).abs().max(), (cols - 32).abs().max()) > 8


def test_a_refinement_of_both_images_reads_the_rainy_one() -> None:
    """``inputs=2``: the first convolution reads [f, x]; with its x half zero it is the refinement of f alone, and
    otherwise a change of x alone changes the correction."""
    both, alone = perturb(Refinement(3, 8, 3, 1, inputs=2), 0.2), Refinement(3, 8, 3, 1)
    with torch.no_grad():
        alone.load_state_dict({**both.state_dict(), "body.0.weight": both.body[0].weight[:, :3].clone()})
        f, x = torch.rand(1, 3, 20, 23), torch.rand(1, 3, 20, 23)
        assert (both(f, x) - both(f, torch.rand_like(x))).abs().max() > 1e-3
        both.body[0].weight[:, 3:] = 0
        torch.testing.assert_close(both(f, x), alone(f), rtol=0, atol=0)
    with pytest.raises(ValueError, match="refine_input"):
        RefineEfDeRainConfig(**SMALL, refine_input="rainy")


def test_a_refinement_starts_from_its_efderain_weights(tmp_path) -> None:
    """Training a refined network from a plain one's weights (``init_weights``): the refinement starts as no change."""
    from derain.training.trainer import _load_init_weights

    plain = perturb(EfDeRain(EfDeRainConfig(**SMALL))).eval()
    derain.save_model(plain, tmp_path / "plain.safetensors")
    refined = RefineEfDeRain(RefineEfDeRainConfig(**SMALL, refine_width=8)).eval()
    _load_init_weights(refined, str(tmp_path / "plain.safetensors"))
    x = torch.rand(1, 3, 29, 37)
    with torch.no_grad():
        torch.testing.assert_close(refined(x), plain(x), rtol=1e-5, atol=1e-5)


class TestNAFEfDeRain:
    def test_blocks_start_as_identity(self) -> None:
        block = NAFBlock(6)
        x = torch.rand(1, 6, 5, 7)
        assert torch.equal(block(x), x)

    def test_kpn_blocks_are_naf(self) -> None:
        model = NAFEfDeRain(EfDeRainConfig(**SMALL))
        assert any(isinstance(m, NAFBlock) for m in model.modules())
        assert model(torch.rand(1, 3, 17, 19)).shape == (1, 3, 17, 19)


VARIANTS = [n for n in derain.list_models() if model_spec(n).architecture in ("efderain-rep", "efderain-refine", "efderain-naf")]


@pytest.mark.precision
@pytest.mark.parametrize("name", VARIANTS)
class TestRegisteredVariants:
    """Every registered variant exports to ONNX with the same output (the fused and cropped paths: tests/test_models.py)."""

    def test_onnx_export_matches_torch(self, name: str, tmp_path) -> None:
        pytest.importorskip("onnxruntime")
        from derain.inference.onnx_export import OnnxDerainer, export_onnx

        model = inference_form(perturb(derain.create_model(name), 0.02).eval())
        runner = OnnxDerainer(export_onnx(model, tmp_path / "m.onnx"), threads=1)
        x = torch.rand(1, 3, 37, 53)
        reference = derain.load_derainer(model, precision="fp32").run_tensor(x)
        assert (runner.run_tensor(x) - reference).abs().max().item() <= 1e-3


def _pairs(folder, n: int, size: int = 40) -> None:
    rng = np.random.default_rng(0)
    for sub in ("rainy", "clean"):
        (folder / sub).mkdir(parents=True)
    for i in range(n):
        clean = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        rainy = np.clip(clean.astype(int) + (rng.random((size, size, 1)) > 0.9) * 80, 0, 255).astype(np.uint8)
        Image.fromarray(clean).save(folder / "clean" / f"{i:03d}.png")
        Image.fromarray(rainy).save(folder / "rainy" / f"{i:03d}.png")


def _fails(*args, **kwargs):
    raise AssertionError("scored again")


class TestFrontierBench:
    def test_trains_scores_and_times_with_one_budget(self, tmp_path, monkeypatch, capsys) -> None:
        train_dir = tmp_path / "family"
        _pairs(train_dir, 32)
        out = tmp_path / "runs"
        kw = dict(candidates=["efderain-cpu-w32"], minutes=0.002, memorise_minutes=0.001, train_dir=train_dir, out_dir=out,
                  sizes=[(24, 40)], precisions=["fp32"], overrides=["crop=32", "batch_size=2", "threads=1"])
        report = run_frontier(**kw)
        captured = capsys.readouterr()
        assert captured.out == "" and "validation" in captured.err  # the trainer's lines are progress (stderr)
        (row,) = report.rows
        seconds = json.loads((out / "steps.json").read_text())["seconds"]["efderain-cpu-w32"]
        assert row.steps == max(1, int(0.002 * 60 / seconds)) and row.memorise_steps >= 1
        assert np.isfinite(row.holdout["psnr"]) and np.isfinite(row.memorise_psnr) and row.ms["24x40 fp32"] > 0
        assert (out / "train" / "efderain-cpu-w32" / "best.safetensors").exists()
        assert sorted(p.name for p in (out / "memorise-pairs" / "rainy").iterdir())[-1] == "009.png"  # the first 10
        table = frontier_table(report)
        assert "efderain-cpu-w32" in table and "KPN" in table
        best = out / "train" / "efderain-cpu-w32" / "best.safetensors"
        written, log_rows = best.stat().st_mtime_ns, (out / "train" / "efderain-cpu-w32" / "train_log.csv").read_text()
        # the same runs resume: nothing retrains, and the same weights are not scored again (only timed)
        with monkeypatch.context() as m:
            m.setattr(frontier, "_scores", _fails)
            m.setattr(frontier, "_memorised", _fails)
            again = run_frontier(**kw)
        assert again.rows[0].holdout == row.holdout and again.rows[0].steps == row.steps
        assert again.rows[0].memorise_psnr == row.memorise_psnr and again.rows[0].ms["24x40 fp32"] > 0
        assert best.stat().st_mtime_ns == written
        assert (out / "train" / "efderain-cpu-w32" / "train_log.csv").read_text() == log_rows
        os.utime(best, ns=(written + 10**9, written + 10**9))  # the weights written again: scored again
        with pytest.raises(AssertionError, match="scored again"):
            with monkeypatch.context() as m:
                m.setattr(frontier, "_scores", _fails)
                run_frontier(**kw)

    def test_a_score_is_kept_with_what_it_was_measured_on(self, tmp_path) -> None:
        """Another hold-out or test folder is another stamp (measured again); an unreadable cache is measured anew."""
        from derain.training import load_config, resolve_preset

        weights = tmp_path / "w.safetensors"
        weights.write_bytes(b"weights")
        cfg = load_config(resolve_preset("rain100l"), [f"holdout={{{tmp_path}: 20}}"])
        other = load_config(resolve_preset("rain100l"), [f"holdout={{{tmp_path}: 10}}"])
        stamp = frontier._stamp(weights, cfg, [tmp_path])
        assert stamp == frontier._stamp(weights, cfg, [tmp_path])
        assert stamp != frontier._stamp(weights, other, [tmp_path]) and stamp != frontier._stamp(weights, cfg, [])
        (tmp_path / "scores.json").write_text("{not json")
        scores = frontier._Scores(tmp_path / "scores.json")
        assert scores.get("k", stamp, lambda: 1.5) == 1.5 and scores.get("k", stamp, _fails) == 1.5
        assert frontier._Scores(tmp_path / "scores.json").get("k", stamp, _fails) == 1.5  # written back, readable

    def test_memorisation_alone(self, tmp_path) -> None:
        """``minutes=0``: each candidate trains on the first 10 pairs and is scored on them; no in-domain run."""
        train_dir = tmp_path / "family"
        _pairs(train_dir, 12)
        report = run_frontier(candidates=["efderain-cpu-w32"], minutes=0, memorise_minutes=0.001, train_dir=train_dir,
                              out_dir=tmp_path / "runs", sizes=[(24, 40)], precisions=["fp32"],
                              overrides=["crop=32", "batch_size=2", "threads=1"])
        (row,) = report.rows
        assert np.isfinite(row.memorise_psnr) and not row.holdout and row.steps == 0 and row.ms["24x40 fp32"] > 0
        assert not (tmp_path / "runs" / "train").exists()
        assert "| — |" in frontier_table(report)  # the held-out column stays empty

    def test_speed_alone(self, tmp_path) -> None:
        """Both budgets 0: each untrained network is timed, nothing trains (a re-parameterised one timed folded)."""
        report = run_frontier(candidates=["efderain-cpu-rep"], minutes=0, memorise_minutes=0, out_dir=tmp_path / "runs",
                              sizes=[(24, 40)], precisions=["fp32"])
        (row,) = report.rows
        assert row.ms["24x40 fp32"] > 0 and not row.holdout and not (tmp_path / "runs").exists()
        assert row.params == sum(p.numel() for p in derain.create_model("efderain-cpu").parameters())

    def test_networks_are_timed_prepared_as_users_run_them(self, monkeypatch) -> None:
        """A trained candidate reaches users as a file, which the runner prepares for the precision (weights in bf16);
        the frontier times such a prepared copy and leaves the network it was given as it was."""
        from derain.bench import frontier
        from derain.inference import derainer

        prepared = []
        real = derainer.Derainer.__init__

        def spy(self, model, *args, **kwargs):
            real(self, model, *args, **kwargs)
            prepared.append(self.model.conv1.conv1[0].weight.dtype)

        monkeypatch.setattr(derainer.Derainer, "__init__", spy)
        net = derain.create_model("efderain-cpu-w32")
        ms = frontier._time_user_path(net, [(24, 40)], ["bf16"], repeats=1)
        assert ms["24x40 bf16"] > 0 and prepared == [torch.bfloat16]
        assert net.conv1.conv1[0].weight.dtype == torch.float32 and net.training

    def test_unknown_candidate_is_one_line(self) -> None:
        with pytest.raises(derain.errors.InvalidArgument, match="unknown candidate"):
            run_frontier(candidates=["nope"])

    def test_every_candidate_is_registered(self) -> None:
        assert set(CANDIDATES) <= set(derain.list_models())
        assert len(set(CANDIDATES.values())) >= 4  # structurally different designs
