"""``profile_calc.py`` with the captured search's all-pairs limit set (``geoff.captured_call.PAIRS_MAX_ATOMS``):
how the all-pairs search and the fixed-shape cell list compare inside the CUDA graph.

    cd benchmarks && python captured_crossover.py LIMIT --device cuda --models schnet painn \
        --sizes 864 1372 2048 --cuda-graphs on --skins 0.5
(LIMIT 0: every periodic cell through the cell list; 2048: all pairs up to 2,048 atoms)
"""
import runpy
import sys

sys.path.insert(0, ".")
import geoff.captured_call as captured  # noqa: E402

captured.PAIRS_MAX_ATOMS = int(sys.argv[1])
sys.argv = ["profile_calc.py"] + sys.argv[2:]
runpy.run_path("profile_calc.py", run_name="__main__")
