"""``profile_calc.py`` with one of the captured search's limits set: where the all-pairs
search and the fixed-shape cell list cross inside the CUDA graph
(``geoff.captured_call.PAIRS_MAX_ATOMS``), or where ``cuda_graphs="auto"`` stops capturing
the model with the search and captures the search alone (``--whole``: the calculator's
``DEFAULT_MAX_ATOMS`` of ``geoff.captured_call`` and ``geoff.cuda_graphs``, and no
representation's own ``CAPTURE_MAX_ATOMS``).

    cd benchmarks && python captured_crossover.py LIMIT --device cuda --models schnet painn \
        --sizes 864 1372 2048 --cuda-graphs on --skins 0.5
(LIMIT 0: every periodic cell through the cell list; 2048: all pairs up to 2,048 atoms)

    cd benchmarks && python captured_crossover.py --whole LIMIT --device cuda \
        --models schnet painn mace --sizes 2048 2916 --cuda-graphs auto --skins 0.5
(LIMIT 1500: the search alone above 1,500 atoms; 3000: search and model to 3,000)
"""
import runpy
import sys

sys.path.insert(0, ".")
import geoff.captured_call as captured  # noqa: E402
import geoff.cuda_graphs as cuda_graphs  # noqa: E402
from geoff.potentials.representation import Representation  # noqa: E402

args = sys.argv[1:]
if args[0] == "--whole":
    captured.DEFAULT_MAX_ATOMS = cuda_graphs.DEFAULT_MAX_ATOMS = int(args[1])
    stack = [Representation]
    while stack:  # every representation class: the one limit for all
        cls = stack.pop()
        cls.CAPTURE_MAX_ATOMS = None
        stack.extend(cls.__subclasses__())
    args = args[2:]
else:
    captured.PAIRS_MAX_ATOMS = int(args[0])
    args = args[1:]
sys.argv = ["profile_calc.py"] + args
runpy.run_path("profile_calc.py", run_name="__main__")
