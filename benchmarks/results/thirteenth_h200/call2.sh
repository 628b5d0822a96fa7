export WORK=/tmp/w; mkdir -p $WORK/py
pip install -q --no-deps --no-index --target $WORK/py .whl/*.whl > /dev/null 2>&1
PYTHONPATH=.:$WORK/py timeout 200 python -m pytest -q -p no:cacheprovider tests/test_neighbours.py tests/test_to_device.py tests/test_skin_edges.py tests/test_step_graph.py tests/test_cuda_graphs.py > $OUT/gpu_pytest.log 2>&1; grep -E "FAILED|passed|failed" $OUT/gpu_pytest.log
H="# one H200, $(python -c 'import torch;print(torch.__version__)'), $(date -u +%FT%H:%MZ)"
cd benchmarks
S="864 2048 2916 4000 32000 131072 1000000"
{ echo "$H, .before = geoff at 72113a2: python benchmarks/list_speed.py --device cuda --sizes $S"; PYTHONPATH=../.before:$WORK/py python list_speed.py --device cuda --sizes $S; } > $OUT/list_before.md 2>&1
{ echo "$H, this tree: python benchmarks/list_speed.py --device cuda --sizes $S"; PYTHONPATH=..:$WORK/py python list_speed.py --device cuda --sizes $S; } > $OUT/list_after.md 2>&1
{ echo "$H, this tree, all pairs to 4096 atoms: --sizes 2916 4000 --all-pairs-max 4096; then the cell list alone (--all-pairs-max 0) at 864 2048"; PYTHONPATH=..:$WORK/py python list_speed.py --device cuda --sizes 2916 4000 --all-pairs-max 4096; PYTHONPATH=..:$WORK/py python list_speed.py --device cuda --sizes 864 2048 --all-pairs-max 0; } > $OUT/list_variants.md 2>&1
cd ..
for r in 1 2; do
for tree in .before .; do
{ echo "$H, tree $tree, round $r: python benchmarks/profile_calc.py --device cuda --models schnet painn --sizes 864 2048 4000 32000 --skins 0.5 --skin-edges auto"; PYTHONPATH=$tree:benchmarks:$WORK/py python benchmarks/profile_calc.py --device cuda --models schnet painn --sizes 864 2048 4000 32000 --skins 0.5 --skin-edges auto; } >> $OUT/calc_before_after.md 2>&1
done; done
grep -h "^| \|^#" $OUT/list_*.md; grep -h "^| \|^#" $OUT/calc_before_after.md
