"""One registry per axis: each query function lists exactly the built-in names, an unknown name
is an UnknownNameError naming the choices, the CLI offers the registry's names, and an entry
registered at run time is usable and listed."""
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from flowstore.cli.main import cli
from flowstore.codec import CODECS, Codec, check_codec, decode_gray, encode_gray, list_codecs, register_codec
from flowstore.decode import DECODERS, iter_frames, list_decoders
from flowstore.errors import UnknownNameError
from flowstore.flow.registry import (
    METHODS, FlowEstimator, build_flow, list_engines, list_methods, register_flow, resolve_engine,
)
from flowstore.heads.fusion import FUSIONS, build_fusion, list_fusions, register_fusion
from flowstore.heads.registry import HEADS, head_builder, head_options, list_heads
from flowstore.quantize import SCHEMES, QuantSpec, list_quant_schemes
from flowstore.data.sampling import list_stackings
from flowstore.registry import Registry
from flowstore.store.backend import BACKENDS, list_backends, reader_class, writer_class
from flowstore.store.format import SHARD_SUFFIX, shard_name

BUILT_IN = {
    "backend": (list_backends, ["hdf5", "lmdb"]),
    "flow method": (list_methods, ["farneback", "gmflow", "neuflow", "neuflow2", "raft", "raft_small", "rapidflow",
                                   "sea_raft_s", "tvl1"]),
    "flow engine": (list_engines, ["opencv", "ptlflow", "torch"]),
    "codec": (list_codecs, ["jpeg", "png", "raw"]),
    "decoder": (list_decoders, ["opencv", "pyav"]),
    "quantization": (list_quant_schemes, ["bound", "minmax"]),
    "stacking": (list_stackings, ["bidirectional", "stack", "trajectory"]),
    "head": (list_heads, ["linear", "mlp", "multitask", "transformer"]),
    "fusion": (list_fusions, ["early-concat", "late-avg", "late-perclass", "late-weighted", "logits-mlp", "mid-conv", "none", "svm", "token-transformer"]),
}


@pytest.mark.parametrize("axis", sorted(BUILT_IN))
def test_query_function_lists_exactly_the_built_in_names(axis):
    query, names = BUILT_IN[axis]
    assert query() == names


def test_backbones_list_the_built_in_timm_names():
    from flowstore.features.backbones import list_backbones

    assert list_backbones() == ["efficientnet_b0", "efficientnet_b3", "mobilenetv3_large_100",
                                "resnet101", "resnet18", "resnet34", "resnet50"]


def test_engines_of_each_method_default_first():
    assert list_engines("farneback") == ["opencv", "torch"]
    assert list_engines("tvl1") == ["opencv", "torch"]
    assert list_engines("gmflow") == list_engines("neuflow2") == ["ptlflow"]
    assert list_engines("ptlflow:raft") == ["ptlflow"]
    assert resolve_engine("tvl1", device="cuda:0") == "torch"
    assert resolve_engine("ptlflow:raft") == "ptlflow"


@pytest.mark.parametrize("lookup, message", [
    (lambda: writer_class("zarr"), "unknown format 'zarr'; choose from ['hdf5', 'lmdb']"),
    (lambda: reader_class("zarr"), "unknown format 'zarr'; choose from ['hdf5', 'lmdb']"),
    (lambda: shard_name("zarr", 0), "unknown format 'zarr'; choose from ['hdf5', 'lmdb']"),
    (lambda: resolve_engine("pwcnet"),
     "unknown method 'pwcnet'; choose from ['farneback', 'gmflow', 'neuflow', 'neuflow2', 'raft', 'raft_small', "
     "'rapidflow', 'sea_raft_s', 'tvl1'] or 'ptlflow:NAME'"),
    (lambda: check_codec("webp"), "unknown codec 'webp'; choose from ['jpeg', 'png', 'raw']"),
    (lambda: next(iter_frames("x.mp4", decoder="ffmpeg")),
     "unknown decoder 'ffmpeg'; choose from ['opencv', 'pyav']"),
    (lambda: QuantSpec("log"), "unknown quantization 'log'; choose from ['bound', 'minmax']"),
    (lambda: head_builder("resnet"), "unknown head 'resnet'; choose from ['linear', 'mlp', 'multitask', 'transformer']"),
    (lambda: build_fusion("mid"),
     "unknown fusion 'mid'; choose from ['early-concat', 'late-avg', 'late-perclass', 'late-weighted', 'logits-mlp', 'mid-conv', 'none', 'svm', 'token-transformer']"),
])
def test_unknown_name_names_the_choices(lookup, message):
    with pytest.raises(UnknownNameError) as err:
        lookup()
    assert str(err.value) == message


def test_unknown_backbone_names_the_registered_ones():
    pytest.importorskip("timm")
    from flowstore.features.backbones import build_backbone

    with pytest.raises(UnknownNameError, match=r"unknown backbone 'no_such_net'; choose from \['efficientnet_b0'"):
        build_backbone("no_such_net")


CLI_OPTIONS = [
    ("extract", "--format", list_backends),
    ("extract", "--engine", list_engines),
    ("extract", "--quant", list_quant_schemes),
    ("extract", "--flow-codec", list_codecs),
    ("extract", "--frame-codec", list_codecs),
    ("extract", "--decoder", list_decoders),
    ("flow", "--engine", list_engines),
    ("train-head", "--head", list_heads),
    ("train-head", "--fusion", list_fusions),
]


def _option(command: str, flag: str):
    cmd = cli.get_command(None, command)
    return next(p for p in cmd.params if flag in p.opts)


@pytest.mark.parametrize("command, flag, query", CLI_OPTIONS, ids=[f"{c} {f}" for c, f, _ in CLI_OPTIONS])
def test_cli_choice_is_the_registry(command, flag, query):
    assert list(_option(command, flag).type.choices) == query()
    help_text = CliRunner().invoke(cli, [command, "--help"], terminal_width=200).output
    assert f"{flag} [{'|'.join(query())}]" in help_text


def test_method_help_lists_the_methods():
    for command in ("extract", "flow"):
        help_text = CliRunner().invoke(cli, [command, "--help"], terminal_width=200).output
        assert "farneback, gmflow, neuflow, neuflow2, raft, raft_small, rapidflow, sea_raft_s, tvl1 or ptlflow:NAME" in help_text


def test_head_options_come_from_the_builders():
    assert "hidden" in head_options("mlp") and "hidden" not in head_options("linear")
    assert all("dropout" in head_options(name) for name in list_heads())
    assert {"dim", "layers", "heads", "pooling"} <= set(head_options("transformer"))


def test_views_keep_their_old_names():
    assert list(BACKENDS) == ["lmdb", "hdf5"] and dict(SHARD_SUFFIX) == {"lmdb": ".lmdb", "hdf5": ".h5"}
    assert sorted(DECODERS) == list_decoders() and sorted(CODECS) == list_codecs()
    assert sorted(SCHEMES) == list_quant_schemes() and sorted(HEADS) == list_heads()
    assert sorted(FUSIONS) == list_fusions() and "ptlflow:*" in METHODS


def test_a_name_registers_once():
    registry = Registry("toy")
    registry.register("a", 1)
    with pytest.raises(ValueError, match="toy 'a' is registered already"):
        registry.register("a", 2)
    assert registry.unregister("a") == 1 and registry.names() == []
    with pytest.raises(UnknownNameError, match=r"unknown toy 'a'; choose from \[\]"):
        registry.unregister("a")


class InvertCodec(Codec):
    """A toy lossless codec: the inverted pixels."""

    def encode_gray(self, plane, quality):
        return (255 - plane).tobytes()

    def decode_gray(self, data, shape):
        return 255 - np.frombuffer(data, np.uint8).reshape(shape)


def test_a_registered_codec_is_usable_listed_and_offered_by_the_cli():
    register_codec("invert", InvertCodec())
    try:
        plane = np.arange(12, dtype=np.uint8).reshape(3, 4)
        data = encode_gray(plane, "invert")
        assert data == (255 - plane).tobytes()
        np.testing.assert_array_equal(decode_gray(data, "invert", (3, 4)), plane)
        assert "invert" in list_codecs()
        assert "invert" in _option("extract", "--flow-codec").type.choices
    finally:
        CODECS.unregister("invert")
    assert "invert" not in list_codecs()
    with pytest.raises(UnknownNameError):
        encode_gray(np.zeros((2, 2), np.uint8), "invert")


def test_a_registered_fusion_is_usable_and_listed():
    @register_fusion
    class FirstStream:
        name = "first"
        level = "scores"

        def predict(self, prob_list):
            return prob_list[0]

    try:
        assert "first" in list_fusions()
        assert build_fusion("first").predict([np.eye(2), np.ones((2, 2))]).tolist() == [[1, 0], [0, 1]]
    finally:
        FUSIONS.unregister("first")
    assert "first" not in list_fusions()


class ZeroFlow(FlowEstimator):
    method, engine = "zero", "numpy"

    def compute(self, prev, nxt):
        return np.zeros((len(prev), *prev[0].shape[:2], 2), np.float32)

    def describe(self):
        return {"method": self.method, "engine": self.engine}


def test_a_registered_flow_engine_is_usable_and_listed():
    register_flow("zero", "numpy", lambda *, params: ZeroFlow())
    try:
        assert "zero" in list_methods() and list_engines("zero") == ["numpy"]
        frame = np.zeros((4, 5, 3), np.uint8)
        assert build_flow("zero")(frame, frame).shape == (4, 5, 2)
    finally:
        METHODS.unregister("zero")
    assert "zero" not in list_methods()


def _imported_modules(code: str) -> set[str]:
    out = subprocess.run([sys.executable, "-c", code + "\nimport sys; print(' '.join(sys.modules))"],
                         capture_output=True, text=True, check=True).stdout
    return {name.split(".")[0] for name in out.split()}


def test_help_and_opencv_runs_stay_light():
    listed = _imported_modules("from click.testing import CliRunner\nfrom flowstore.cli.main import cli\n"
                               "assert CliRunner().invoke(cli, ['--help']).exit_code == 0")
    assert not listed & {"numpy", "cv2", "torch", "h5py"}
    opencv_run = _imported_modules("import numpy as np\nfrom flowstore.flow import build_flow\n"
                                   "f = np.zeros((8, 8, 3), np.uint8)\nbuild_flow('farneback')(f, f)")
    assert not opencv_run & {"torch", "ptlflow"}
