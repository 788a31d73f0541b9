#!/usr/bin/env bash
# Regenerate the numbers and figures of BENCHMARKS.md on this machine (run from the repository
# root, with ../shared/data beside it and `pip install ".[bench]"`). Tables go to stdout and to
# OUT (default runs/bench); the figures to docs/bench/. About 60 minutes on 2 CPU cores, plus the
# ablation's training (run it first: `derain bench ablation ...` below, ~35 minutes more).
set -euo pipefail
OUT=${OUT:-runs/bench}
DATA=${DATA:-../shared/data}
mkdir -p "$OUT" docs/bench

# Paper Table 2 (ablation): v1-v4, 1500 steps each of efderain-cpu on 128x128 crops (resumes if done).
derain bench ablation --iterations 1500 --model efderain-cpu --test "$DATA/Rain100L" \
    --out-dir runs/ablation --json "$OUT/ablation.json" crop=128 threads=2 | tee "$OUT/ablation.md"

# Speed side by side (paper Fig. 1/4 x-axis): default, fast, efderain-paper, the released code path, PReNet.
derain bench speed --model default --model fast --model efderain-paper --model "efderain-paper (released path)" \
    --model prenet --size 481x321 --size 1920x1080 --batch 1 --precision bf16 --precision fp32 --repeats 7 \
    --json "$OUT/speed.json" --csv "$OUT/speed.csv" | tee "$OUT/speed.md"
# The compiled path against eager (cold and warm inductor cache), and ONNX Runtime against torch.
python benchmarks/bench_compiled.py | tee "$OUT/compiled.md"
for m in default fast; do
    python benchmarks/bench_inference.py --model "$m" --sizes 481x321 --images 0 | tee "$OUT/ort_$m.md"
done
# A folder run beside a busy process, per OpenMP wait policy and thread count.
python benchmarks/bench_contention.py --images 60 --repeats 2 | tee "$OUT/contention.md"

# Quality vs time on the test set (reported only) and on the heavy validation pairs.
MODELS=(--model default --model fast
        --model "prenet=$DATA/peers/prenet/Rain100L.pth" --model "prenet=$DATA/peers/prenet/Rain100H.pth")
for v in v1 v2 v3 v4; do MODELS+=(--model "runs/ablation/$v/best.safetensors"); done
derain bench quality "$DATA/Rain100L" "${MODELS[@]}" --plot docs/bench/quality_rain100l.png \
    --json "$OUT/quality_rain100l.json" | tee "$OUT/quality_rain100l.md"
derain bench quality "$DATA/JORDER_heavy5" "${MODELS[@]}" --plot docs/bench/quality_jorder_heavy5.png \
    --json "$OUT/quality_jorder_heavy5.json" | tee "$OUT/quality_jorder_heavy5.md"

# Paper Fig. 2c: the default model's kernels on a heavy-rain validation image.
derain explain "$DATA/JORDER_heavy5/rainy/$(ls "$DATA/JORDER_heavy5/rainy" | head -1)" -o docs/bench/kernels.png \
    | tee "$OUT/explain.txt"
