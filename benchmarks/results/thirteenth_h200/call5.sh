# thirteenth session, call 5: GPU tests after all_pairs (molecules, replicas); cluster search before / after
export WORK=/tmp/w; mkdir -p $WORK/py
pip install -q --no-deps --no-index --target $WORK/py .whl/*.whl > /dev/null 2>&1
PYTHONPATH=.:$WORK/py timeout 300 python -m pytest -q -p no:cacheprovider tests/test_neighbours.py tests/test_to_device.py tests/test_replicas.py tests/test_study_cuda_graphs.py tests/test_skin_edges.py tests/test_step_graph.py tests/test_cuda_graphs.py > $OUT/gpu_pytest_call5.log 2>&1; grep -E "FAILED|passed|failed" $OUT/gpu_pytest_call5.log
H="# one H200, $(python -c 'import torch;print(torch.__version__)'), $(date -u +%FT%H:%MZ)"
cd benchmarks
{ for r in 1 2; do
echo "$H, round $r: Cu clusters (--open), cutoff 5.5; .before = geoff at 72113a2, then this tree"
PYTHONPATH=../.before:$WORK/py python list_speed.py --device cuda --open --sizes 32 256 864 2048 --repeats 20
PYTHONPATH=..:$WORK/py python list_speed.py --device cuda --open --sizes 32 256 864 2048 --repeats 20
done; } > $OUT/list_open.md 2>&1
grep -v Warn $OUT/list_open.md
