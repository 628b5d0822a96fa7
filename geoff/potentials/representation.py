"""The representation contract: what every architecture in ``geoff.potentials`` provides.

A *representation* maps a graph (``geoff.graph``) and its edge vectors to per-atom features;
``EnergyModel`` adds energies, forces, stress and the direct force head for all of them.

``Representation`` (a whole map, ``forward`` only)
    ``forward(graph, edge_vec) -> {"scalars": (N, F), "vectors": (N, 3, C) optional}``,
    with ``edge_vec`` (E, 3) in Å (``r_ij = x_j - x_i + shift_ij``, computed by
    ``EnergyModel`` so that autograd reaches positions and strain). Attributes:

    * ``n_scalars`` (F) and ``n_vectors`` (C, 0 if the representation has no vectors);
    * ``n_layers``: cutoff spheres in an atom's receptive field (hops): the energy of atom i
      depends on edges whose receiver is at most ``n_layers - 1`` hops from i;
    * ``is_local``: False only for representations that see the whole structure at once
      (FAENet with global PCA frames): no extensivity, no MPI domain decomposition.

    An optional graph key ``edge_mask`` (E,) multiplies every message along each edge (used by
    ``geoff.explain``): ``LayeredRepresentation.forward`` multiplies it into the geometry
    entry named by the class attribute ``EDGE_GATE``, the per-edge factor all messages are
    linear in (the cutoff envelope, or the enveloped spherical harmonics).

    Optional graph keys ``edge_pair`` / ``pair_first`` (``geoff.graph.add_edge_pairs``): an
    ``embed`` may compute its distance-only terms once per pair of reverse edges
    (``pair_rows``) and pass ``edge_pair`` on in the geometry (``with_pairs``); the layers
    give it to ``EdgeMessages.aggregate``. With an ``edge_mask`` the pairs are dropped first
    (a mask may weight the two edges of a pair differently).

    A new model file may start here: it works everywhere except where the pieces below are
    needed (``decomposable`` is False).

``LayeredRepresentation`` (decomposable: embedding, one function per layer, readout)
    ::

        state, geometry = embed(graph, edge_vec)       # once per structure
        for k in range(n_layers):
            state = layer(k, state, geometry)           # one message-passing hop each
        features = readout(state, geometry)             # {"scalars", "vectors"?}

    ``forward`` is exactly this composition. ``state`` and ``geometry`` are
    ``Dict[str, Tensor]`` (TorchScript-friendly):

    * ``geometry``: every per-edge (and per-atom input) quantity the layers and the readout
      need, computed once by ``embed`` from the graph and ``edge_vec``: ``edge_index`` always,
      then e.g. radial bases, envelopes, spherical harmonics, species, triplets. Layers and
      readout never see the graph itself.
    * ``state``: what layers pass on. ``node_features`` names the state entries (one row per
      atom) that the next layer reads at *neighbours* (through ``edge_index[1]``): under
      per-layer communication these are the entries whose ghost rows must come from their
      owners after every layer (and whose gradients go back in the backward pass).
      ``edge_messages`` names state entries with one row per *edge* that the next layer reads
      at other edges (DimeNet++'s messages m_ji: empty for every other model). Any other
      entry is private to an atom or to the edges into it (running sums read by the readout,
      such as MACE's per-layer scalars or EGNN's per-layer vectors), so it needs no exchange.

    Each piece is a plain differentiable function of its tensor inputs: autograd runs through
    ``embed``, any single ``layer`` or ``readout`` on its own. ``layer`` and the two others
    are TorchScript-compiled with the model (``forward`` calls them), so an exported
    ``EnergyModel`` carries ``representation.embed``, ``.layer`` and ``.readout``.
"""

from typing import Dict, List, Optional, Sequence, Tuple

from torch import Tensor, nn


class Representation(nn.Module):
    """Base of every representation: the four contract attributes, ``forward`` only.

    Subclasses call ``super().__init__(n_scalars, n_vectors, n_layers, is_local)`` and
    implement ``forward(graph, edge_vec) -> {"scalars": (N, F), "vectors": (N, 3, C)}``.
    """

    n_scalars: int
    n_vectors: int
    n_layers: int
    is_local: bool
    decomposable = False  # embed / layer / readout available (LayeredRepresentation)
    # Representations with ``tabulate()`` (radial_table.py): the device types on which
    # ``GeoffCalculator(radial_table="auto")`` tabulates them in float32 (measured to pay).
    RADIAL_TABLE_AUTO = ()
    # ``GeoffCalculator(skin_edges="auto")`` on CUDA hands the model the whole Verlet list up
    # to this many atoms (None: the calculator's ``AUTO_KEEP_MAX_ATOMS``).
    SKIN_KEEP_MAX_ATOMS = None
    # ``GeoffCalculator(cuda_graphs="auto")`` captures the neighbour search with the model up
    # to this many atoms (None: ``geoff.captured_call.DEFAULT_MAX_ATOMS``), the search alone
    # above.
    CAPTURE_MAX_ATOMS = None

    def __init__(self, n_scalars: int, n_vectors: int, n_layers: int, is_local: bool = True):
        super().__init__()
        if n_scalars < 1 or n_vectors < 0 or n_layers < 1:
            raise ValueError(f"a representation needs n_scalars >= 1, n_vectors >= 0 and "
                             f"n_layers >= 1; got {n_scalars}, {n_vectors}, {n_layers}")
        self.n_scalars = int(n_scalars)
        self.n_vectors = int(n_vectors)
        self.n_layers = int(n_layers)
        self.is_local = bool(is_local)

    def skip_vectors(self, skip: bool = True) -> None:
        """The caller reads no ``vectors``: a representation may stop computing what only
        they need (``MACE`` does, setting ``n_vectors`` to 0); the default keeps them."""


class LayeredRepresentation(Representation):
    """A representation in pieces: ``embed``, ``layer(k, ...)`` for k < n_layers, ``readout``.

    Subclasses also pass ``node_features`` (and ``edge_messages`` where layers pass per-edge
    state) to ``__init__`` and implement the three pieces; see the module docstring.
    """

    node_features: List[str]
    edge_messages: List[str]
    edge_gate: str
    decomposable = True
    # Geometry entry (first dimension E) that every message along an edge is proportional
    # to, so that ``graph["edge_mask"]`` (E,) can weight edges (0: as if the edge were
    # absent). Empty: the representation does not support edge masks.
    EDGE_GATE = ""

    def __init__(self, n_scalars: int, n_vectors: int, n_layers: int,
                 node_features: Sequence[str], edge_messages: Sequence[str] = (),
                 is_local: bool = True):
        super().__init__(n_scalars, n_vectors, n_layers, is_local)
        self.node_features = list(node_features)
        self.edge_messages = list(edge_messages)
        self.edge_gate = str(type(self).EDGE_GATE)  # an instance attribute, for TorchScript

    def embed(self, graph: Dict[str, Tensor],
              edge_vec: Tensor) -> Tuple[Dict[str, Tensor], Dict[str, Tensor]]:
        """Graph and edge vectors (E, 3) -> (initial state, geometry)."""
        raise NotImplementedError(f"{type(self).__name__} does not implement embed")

    def layer(self, k: int, state: Dict[str, Tensor],
              geometry: Dict[str, Tensor]) -> Dict[str, Tensor]:
        """Message-passing layer ``k`` (0 <= k < n_layers): state -> new state."""
        raise NotImplementedError(f"{type(self).__name__} does not implement layer")

    def readout(self, state: Dict[str, Tensor],
                geometry: Dict[str, Tensor]) -> Dict[str, Tensor]:
        """Final state -> {"scalars": (N, F), "vectors": (N, 3, C) if n_vectors > 0}."""
        raise NotImplementedError(f"{type(self).__name__} does not implement readout")

    def check_layer(self, k: int) -> None:
        """Raise if ``k`` is not a layer index (``layer`` implementations call this first)."""
        if k < 0 or k >= self.n_layers:
            raise IndexError("layer index {} out of range for {} layers".format(k, self.n_layers))

    def forward(self, graph: Dict[str, Tensor], edge_vec: Tensor) -> Dict[str, Tensor]:
        if "edge_mask" in graph:  # a mask weights each edge: the per-edge path, not pairs
            graph = without_pairs(graph)
        state, geometry = self.embed(graph, edge_vec)
        if "edge_mask" in graph:
            geometry = mask_edges(geometry, graph["edge_mask"], self.edge_gate)
        for k in range(self.n_layers):
            state = self.layer(k, state, geometry)
        return self.readout(state, geometry)


def pair_rows(graph: Dict[str, Tensor], x: Tensor) -> Tensor:
    """Rows of ``x`` (E, ...) at one edge of each pair (P, ...) when the graph has edge pairs
    (``geoff.graph.add_edge_pairs``), else ``x``: the inputs of the distance-only terms."""
    if "pair_first" in graph:
        return x.index_select(0, graph["pair_first"])
    return x


def edge_pair(geometry: Dict[str, Tensor]) -> Optional[Tensor]:
    """``geometry["edge_pair"]`` (E,) when ``embed`` put it there, else None."""
    if "edge_pair" in geometry:
        return geometry["edge_pair"]
    return None


def without_pairs(graph: Dict[str, Tensor]) -> Dict[str, Tensor]:
    """``graph`` without ``edge_pair`` and ``pair_first``."""
    out: Dict[str, Tensor] = {}
    for key, item in graph.items():
        if key != "edge_pair" and key != "pair_first":
            out[key] = item
    return out


def with_pairs(graph: Dict[str, Tensor], geometry: Dict[str, Tensor]) -> Dict[str, Tensor]:
    """``geometry`` plus the graph's ``edge_pair`` if it has one (for ``embed``)."""
    if "edge_pair" in graph:
        geometry["edge_pair"] = graph["edge_pair"]
    return geometry


def mask_edges(geometry: Dict[str, Tensor], edge_mask: Tensor, gate: str) -> Dict[str, Tensor]:
    """``geometry`` with ``geometry[gate]`` (E, ...) multiplied by ``edge_mask`` (E,)."""
    if gate == "" or gate not in geometry:
        raise RuntimeError("this representation does not support graph['edge_mask'] "
                           "(no EDGE_GATE geometry entry); explain another model")
    value = geometry[gate]
    shape = [value.shape[0]] + [1] * (value.dim() - 1)
    out: Dict[str, Tensor] = {}
    for key, item in geometry.items():
        out[key] = item
    out[gate] = value * edge_mask.to(value.dtype).reshape(shape)
    return out


def contract(representation: nn.Module) -> Tuple[int, int, int, bool]:
    """``(n_scalars, n_vectors, n_layers, is_local)`` of a representation, checked.

    A ``Representation`` declares all four. Any other module (a test potential, a model file
    that starts as a plain ``nn.Module``) must have ``n_scalars`` and ``n_layers``; it is taken
    as local with ``n_vectors`` 0 unless it sets those attributes.
    """
    name = type(representation).__name__
    for attr in ("n_scalars", "n_layers"):
        if not hasattr(representation, attr):
            raise ValueError(f"{name} has no '{attr}' attribute: a representation declares "
                             "n_scalars, n_vectors, n_layers and is_local (subclass "
                             "geoff.potentials.representation.Representation)")
    return (int(representation.n_scalars), int(getattr(representation, "n_vectors", 0)),
            int(representation.n_layers), bool(getattr(representation, "is_local", True)))
