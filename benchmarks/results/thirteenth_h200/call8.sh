# thirteenth session, call 8: GPU tests; MD step and calls with to_host (one concatenation, float64 on the host)
# against HEAD before it (.before = geoff at the commit before), CUDA graphs and eager, two rounds
export WORK=/tmp/w; mkdir -p $WORK/py
pip install -q --no-deps --no-index --target $WORK/py .whl/*.whl > /dev/null 2>&1
PYTHONPATH=.:$WORK/py timeout 300 python -m pytest -q -p no:cacheprovider tests/test_to_device.py tests/test_replicas.py tests/test_study_cuda_graphs.py tests/test_cuda_graphs.py tests/test_step_graph.py > $OUT/gpu_pytest_call8.log 2>&1; grep -E "FAILED|passed|failed" $OUT/gpu_pytest_call8.log
H="# one H200, $(python -c 'import torch;print(torch.__version__)'), $(date -u +%FT%H:%MZ)"
for r in 1 2; do for cg in auto off; do for tree in .before .; do
{ echo "$H, tree $tree, round $r, cuda graphs $cg: profile_calc.py --device cuda --models schnet painn --sizes 864 --skins 0.5 --skin-edges auto --cuda-graphs $cg --md-steps 50"
PYTHONPATH=$tree:benchmarks:$WORK/py python benchmarks/profile_calc.py --device cuda --models schnet painn --sizes 864 --skins 0.5 --skin-edges auto --cuda-graphs $cg --md-steps 50 | grep "^| "; } >> $OUT/to_host_before_after.md 2>&1
done; done; done
cat $OUT/to_host_before_after.md
