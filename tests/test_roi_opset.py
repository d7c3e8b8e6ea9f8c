"""ONNX ops dcn_deploy::DeformRoIPool / DeformPSRoIPool: schemas, shape inference, function bodies in stock ONNX
Runtime against the PyTorch reference, and export of models that use them."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, inliner

from dcn_deploy.onnx import opset
from dcn_deploy.onnx import roi_opset

ort = pytest.importorskip("onnxruntime")
torch = pytest.importorskip("torch")

from dcn_deploy.ops.roi_modules import DeformPSRoIPool, DeformRoIPool, DeformRoIPoolPack  # noqa: E402
from dcn_deploy.ops.roi_pool import deform_psroi_pool, deform_roi_pool  # noqa: E402


def _model(op, shapes, elem=TensorProto.FLOAT, model_opset=19, **attrs) -> onnx.ModelProto:
    names = ["X", "rois", "offset" if op == roi_opset.DEFORM_ROI_POOL else "trans"]
    node = helper.make_node(op, names, ["Y"], domain=opset.DOMAIN, name="pool", **attrs)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info(n, elem, s) for n, s in zip(names, shapes)],
                              [helper.make_tensor_value_info("Y", elem, [None] * 4)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", model_opset)])
    opset.attach_functions(model)
    onnx.checker.check_model(model, full_check=True)
    return model


def _run(model, arrays):
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, dict(zip([i.name for i in session.get_inputs()], arrays)))[0]


def _rois(gen, count, batch, extent):
    xy = torch.rand(count, 2, generator=gen) * extent - 0.15 * extent
    wh = torch.rand(count, 2, generator=gen) * extent * 0.7
    index = torch.randint(0, batch, (count, 1), generator=gen).float()
    return torch.cat([index, xy, xy + wh], dim=1)


@pytest.mark.parametrize("ratio,size", [(1, (2, 2)), (2, (3, 2)), (3, (1, 4))])
def test_roi_pool_body_matches_torch(ratio, size):
    gen = torch.Generator().manual_seed(10)
    x = torch.randn(2, 5, 9, 11, generator=gen)
    rois = _rois(gen, 8, 2, 22.0)
    offset = torch.randn(8, 2, *size, generator=gen) * 0.4
    model = _model(roi_opset.DEFORM_ROI_POOL, [[None, 5, None, None], [None, 5], [None, 2, *size]],
                   pooled_height=size[0], pooled_width=size[1], spatial_scale=0.5, sampling_ratio=ratio, gamma=0.2)
    got = _run(model, [x.numpy(), rois.numpy(), offset.numpy()])
    want = deform_roi_pool(x, rois, offset, size, 0.5, ratio, 0.2)
    np.testing.assert_allclose(got, want.numpy(), atol=1e-5, rtol=1e-5)
    empty = _run(model, [x.numpy(), rois[:0].numpy(), offset[:0].numpy()])
    assert empty.shape == (0, 5, *size)


_ROWS = roi_opset._ROWS_FROM_CHANNELS  # channels per class from which the body gathers rows, not single values


@pytest.mark.parametrize("output_dim,classes,group,pooled,part,samples", [
    (3, 1, 3, 3, 3, 2), (3, 3, 3, 3, 2, 2), (3, 3, 2, 3, 3, 1),      # 1 or 3 channels per class: single values
    (2 * _ROWS, 2, 2, 3, 2, 2), (_ROWS, 1, 3, 3, 3, 1),             # _ROWS or more per class: rows
    (2 * _ROWS, 2 * _ROWS, 2, 2, 2, 3),                              # class-specific offsets (R-FCN's head)
])
def test_psroi_body_matches_torch(output_dim, classes, group, pooled, part, samples):
    from dcn_deploy.backends.reference_evaluator import OracleEvaluator

    gen = torch.Generator().manual_seed(11)
    x = torch.randn(2, output_dim * group * group, 8, 9, generator=gen)
    rois = _rois(gen, 7, 2, 18.0)
    trans = torch.randn(7, 2 * classes, part, part, generator=gen)
    attrs = dict(spatial_scale=0.5, output_dim=output_dim, group_size=group, pooled_size=pooled, part_size=part,
                 sample_per_part=samples, trans_std=0.2)
    shapes = [[None, output_dim * group * group, None, None], [None, 5], [None, 2 * classes, part, part]]
    for no_trans in (0, 1):
        model = _model(roi_opset.DEFORM_PSROI_POOL, shapes, no_trans=no_trans, **attrs)
        arrays = [x.numpy(), rois.numpy(), trans.numpy()]
        want = deform_psroi_pool(x, rois, None if no_trans else trans, 0.5, output_dim, group, pooled, part,
                                 samples, 0.2, bool(no_trans)).numpy()
        np.testing.assert_allclose(_run(model, arrays), want, atol=1e-5, rtol=1e-5)
        oracle = OracleEvaluator(model).run(None, dict(zip(["X", "rois", "trans"], arrays)))[0]
        np.testing.assert_allclose(oracle, want, atol=1e-5, rtol=1e-5)
        empty = _run(model, [x.numpy(), rois[:0].numpy(), trans[:0].numpy()])
        assert empty.shape == (0, output_dim, pooled, pooled)


def test_bodies_pool_a_roi_whose_batch_index_is_outside_the_batch_to_zero():
    """As the kernels do (batchIndexInside): a negative index must not wrap around to the last images (Gather's
    negative indices), NaN must not read image 0, and N or more must not fail inside Gather; nor a NaN offset of
    such a RoI, which the kernels never read (it had become an index far out of range)."""
    from dcn_deploy.backends.reference_evaluator import OracleEvaluator

    gen = torch.Generator().manual_seed(13)
    x = torch.randn(2, 8, 9, 10, generator=gen)
    boxes = _rois(gen, 8, 1, 18.0)[:, 1:]
    index = torch.tensor([-1.0, float("nan"), 2.0, 5.0, -2.0, -0.5, 1.9999, 0.0])
    inside = torch.tensor([False, False, False, False, False, True, True, True])
    rois = torch.cat([index[:, None], boxes], dim=1)
    offset = torch.randn(8, 2, 2, 2, generator=gen) * 0.3
    trans = torch.randn(8, 2, 2, 2, generator=gen) * 0.3
    offset[[0, 3]] = float("nan")
    trans[[1, 4]] = float("nan")
    cases = [
        (_model(roi_opset.DEFORM_ROI_POOL, [[2, 8, 9, 10], [None, 5], [None, 2, 2, 2]], pooled_height=2,
                pooled_width=2, spatial_scale=0.5, sampling_ratio=2, gamma=0.2), ["X", "rois", "offset"], offset,
         lambda r, o: deform_roi_pool(x, r, o, 2, 0.5, 2, 0.2)),
        (_model(roi_opset.DEFORM_PSROI_POOL, [[2, 8, 9, 10], [None, 5], [None, 2, 2, 2]], spatial_scale=0.5,
                output_dim=2, group_size=2, pooled_size=2, sample_per_part=2, trans_std=0.1), ["X", "rois", "trans"],
         trans, lambda r, t: deform_psroi_pool(x, r, t, 0.5, 2, 2, 2, 2, 2, 0.1, False)),
    ]
    for model, names, third, op in cases:
        want = op(rois[inside], third[inside]).numpy()
        # with NaN (the bodies' exact form) and without (their finite form, where such a RoI's samples are not
        # taken at all)
        for shifts in (third, third.nan_to_num(0.5)):
            arrays = [x.numpy(), rois.numpy(), shifts.numpy()]
            for got in (_run(model, arrays), OracleEvaluator(model).run(None, dict(zip(names, arrays)))[0]):
                assert np.all(got[~inside.numpy()] == 0)
                np.testing.assert_allclose(got[inside.numpy()], want, atol=1e-5, rtol=1e-5)
                assert np.count_nonzero(want) > 0


_NONFINITE = {"nan": float("nan"), "+inf": float("inf"), "-inf": float("-inf")}

# name -> (op, channels of X, attributes, offset classes, part_size): one case per op and per PS gather
_NONFINITE_CASES = {
    "roi": (roi_opset.DEFORM_ROI_POOL, 5,
            dict(pooled_height=2, pooled_width=3, spatial_scale=0.5, sampling_ratio=2, gamma=0.2), 1, None),
    "psroi_values": (roi_opset.DEFORM_PSROI_POOL, 3 * 9,                       # one channel per class
                     dict(spatial_scale=0.5, output_dim=3, group_size=3, pooled_size=3, part_size=2,
                          sample_per_part=2, trans_std=0.1), 3, 2),
    "psroi_rows": (roi_opset.DEFORM_PSROI_POOL, 3 * _ROWS * 4,                 # _ROWS channels per class
                   dict(spatial_scale=0.5, output_dim=3 * _ROWS, group_size=2, pooled_size=3, part_size=3,
                        sample_per_part=2, trans_std=0.1), 3, 3),
}


def _nonfinite_rows(case):
    """(model, input names, X, rois, third, labels): RoI 0 finite; each other RoI one NaN or infinite value in its
    offset/trans (one bin's x or y shift of the first class) or in one box coordinate, or a NaN shift whose other
    coordinate is shifted off the map (the kernels skip such a sample: 0, as does the torch composite)."""
    op, channels, attrs, classes, part = _NONFINITE_CASES[case]
    gen = torch.Generator().manual_seed(17)
    # W and the classes odd: the -2^63 of a NaN times them does not wrap to index 0 (it did for even ones)
    x = torch.randn(2, channels, 9, 11, generator=gen)
    grid = (attrs["pooled_height"], attrs["pooled_width"]) if op == roi_opset.DEFORM_ROI_POOL else (part, part)
    far = 40.0 if op == roi_opset.DEFORM_ROI_POOL else 400.0  # x gamma (trans_std) x RoI size: off the map
    box = [3.0, 2.0, 15.0, 13.0]
    rows, shifts, labels = [], [], []

    def add(label, coords=box, changes=()):
        third = torch.randn(2 * classes, *grid, generator=gen) * 0.3
        for (channel, i, j), value in changes:
            third[channel, i, j] = value
        rows.append([len(rows) % 2, *coords])
        shifts.append(third)
        labels.append(label)

    add("finite")
    for channel, axis in ((0, "x"), (1, "y")):
        for name, value in _NONFINITE.items():
            add(f"{axis} shift {name}", changes=[((channel, 0, 1), value)])
    add("x shift nan, y off the map", changes=[((0, 1, 1), float("nan")), ((1, 1, 1), far)])
    add("y shift nan, x off the map", changes=[((1, 0, 0), float("nan")), ((0, 0, 0), -far)])
    for i, corner in enumerate(["x1", "y1", "x2", "y2"]):
        for name, value in _NONFINITE.items():
            coords = list(box)
            coords[i] = value
            add(f"box {corner} {name}", coords)
    add("box x1 nan, y below the map", [float("nan"), 40.0, 15.0, 60.0])
    rois, third = torch.tensor(rows), torch.stack(shifts)
    names = ["X", "rois", "offset" if op == roi_opset.DEFORM_ROI_POOL else "trans"]
    model = _model(op, [[None, channels, None, None], [None, 5], [None, 2 * classes, *grid]], **attrs)
    return model, names, x, rois, third, labels


def _kernels(case, library, x, rois, third):
    """The host build of the kernels' arithmetic (roiPoolMath.h) through the C ABI: the reference."""
    from dcn_deploy.plugin.native_roi import deform_psroi_pool_native, deform_roi_pool_native

    op, _, attrs, _, part = _NONFINITE_CASES[case]
    if op == roi_opset.DEFORM_ROI_POOL:
        return deform_roi_pool_native(x, rois, third, (attrs["pooled_height"], attrs["pooled_width"]),
                                      attrs["spatial_scale"], attrs["sampling_ratio"], attrs["gamma"], entry="host",
                                      library=library).numpy()
    return deform_psroi_pool_native(x, rois, third, attrs["spatial_scale"], attrs["output_dim"], attrs["group_size"],
                                    attrs["pooled_size"], part, attrs["sample_per_part"], attrs["trans_std"], False,
                                    entry="host", library=library).numpy()


@pytest.mark.parametrize("case", list(_NONFINITE_CASES))
def test_bodies_give_the_kernels_nan_for_nonfinite_offsets_and_boxes(case, host_library_path):
    """A NaN or infinite offset/trans or box coordinate of a RoI inside the batch: ONNX Runtime and the reference
    evaluator had failed (a NaN sample position cast to the int64 index -2^63, which Gather and GatherElements
    refuse). Now the NaN lands where the kernels put it, bin by bin: a bin is NaN where it takes a sample at a NaN
    position (one whose other coordinate is not off the map), a shift to +-inf moves its bin's samples off the map
    (0), DeformPSRoIPool takes a NaN RoI width as 0.1; every other value is the kernels'."""
    from dcn_deploy.backends.reference_evaluator import OracleEvaluator
    from dcn_deploy.plugin.native import NativeLibrary

    model, names, x, rois, third, labels = _nonfinite_rows(case)
    want = _kernels(case, NativeLibrary(host_library_path), x, rois, third)
    nan = np.isnan(want)
    # what the kernels do here: NaN in only some bins of a RoI, and a NaN shift beside a shift off the map is 0
    assert not nan[0].any() and nan[labels.index("x shift nan")].any() and not nan[labels.index("x shift nan")].all()
    for label in ("x shift nan, y off the map", "y shift nan, x off the map", "box x1 nan, y below the map"):
        assert not nan[labels.index(label)].any() and (want[labels.index(label)] == 0).any(), label
    assert nan[labels.index("box x1 nan")].all() and not nan[labels.index("x shift +inf")].any()
    arrays = [x.numpy(), rois.numpy(), third.numpy()]
    with np.errstate(invalid="ignore"):  # numpy's warnings of inf - inf, 0 x inf: the NaN wanted
        oracle = OracleEvaluator(model).run(None, dict(zip(names, arrays)))[0]
    for runner, got in (("onnxruntime", _run(model, arrays)), ("reference evaluator", oracle)):
        for k, label in enumerate(labels):
            np.testing.assert_array_equal(np.isnan(got[k]), nan[k], err_msg=f"{runner}, RoI {k}: {label}")
            np.testing.assert_allclose(got[k], want[k], atol=1e-5, rtol=1e-5, err_msg=f"{runner}, RoI {k}: {label}")


@pytest.mark.parametrize("case", list(_NONFINITE_CASES))
def test_bodies_nan_only_in_the_bins_of_a_nan_offset(case):
    """Without the host library: a NaN shift of one bin (one part cell for DeformPSRoIPool) makes exactly the bins
    it moves NaN, for every channel of its class; the other bins are the PyTorch op's for the same (finite)
    shifts, and an infinite shift leaves its bins 0."""
    model, _, x, rois, third, labels = _nonfinite_rows(case)
    op, _, attrs, classes, part = _NONFINITE_CASES[case]
    k_nan, k_inf = labels.index("x shift nan"), labels.index("x shift +inf")
    rois, third = rois[[0, k_nan, k_inf]], third[[0, k_nan, k_inf]]
    got = _run(model, [x.numpy(), rois.numpy(), third.numpy()])
    finite = third.clone()
    finite[1:, 0, 0, 1] = 0.0
    if op == roi_opset.DEFORM_ROI_POOL:
        want = deform_roi_pool(x, rois, finite, (attrs["pooled_height"], attrs["pooled_width"]),
                               attrs["spatial_scale"], attrs["sampling_ratio"], attrs["gamma"]).numpy()
        moved = np.zeros(want.shape[1:], bool)
        moved[:, 0, 1] = True
    else:
        want = deform_psroi_pool(x, rois, finite, attrs["spatial_scale"], attrs["output_dim"], attrs["group_size"],
                                 attrs["pooled_size"], part, attrs["sample_per_part"], attrs["trans_std"]).numpy()
        pooled, per_class = attrs["pooled_size"], attrs["output_dim"] // classes
        cells = np.arange(pooled) * part // pooled                      # the part cell of each bin row / column
        moved = np.zeros(want.shape[1:], bool)
        moved[:per_class] = (cells[:, None] == 0) & (cells[None, :] == 1)  # class 0's bins of cell (0, 1)
    assert moved.any() and not moved.all()
    np.testing.assert_allclose(got[0], want[0], atol=1e-5, rtol=1e-5)
    np.testing.assert_array_equal(np.isnan(got[1]), moved)
    np.testing.assert_allclose(got[1][~moved], want[1][~moved], atol=1e-5, rtol=1e-5)
    assert np.all(got[2][moved] == 0)
    np.testing.assert_allclose(got[2][~moved], want[2][~moved], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("output_dim,classes,group", [(3, 3, 3), (2 * _ROWS, 2, 2)], ids=["values", "rows"])
def test_psroi_body_with_no_trans_ignores_a_nonfinite_trans(output_dim, classes, group):
    """no_trans=1 reads no offsets, as the kernels: a NaN or infinite trans changes nothing (a 0 x trans_std
    factor had made every position NaN, and the body fail)."""
    from dcn_deploy.backends.reference_evaluator import OracleEvaluator

    gen = torch.Generator().manual_seed(18)
    x = torch.randn(2, output_dim * group * group, 9, 11, generator=gen)
    rois = _rois(gen, 4, 2, 18.0)
    trans = torch.randn(4, 2 * classes, 2, 2, generator=gen)
    trans[1], trans[2, 0, 1, 1], trans[3, 1, 0, 0] = float("nan"), float("inf"), float("-inf")
    model = _model(roi_opset.DEFORM_PSROI_POOL, [[None, output_dim * group * group, None, None], [None, 5],
                                                 [None, 2 * classes, 2, 2]],
                   spatial_scale=0.5, output_dim=output_dim, group_size=group, pooled_size=3, part_size=2,
                   sample_per_part=2, trans_std=0.1, no_trans=1)
    want = deform_psroi_pool(x, rois, None, 0.5, output_dim, group, 3, 2, 2, 0.1, True).numpy()
    arrays = [x.numpy(), rois.numpy(), trans.numpy()]
    np.testing.assert_allclose(_run(model, arrays), want, atol=1e-5, rtol=1e-5)
    oracle = OracleEvaluator(model).run(None, dict(zip(["X", "rois", "trans"], arrays)))[0]
    np.testing.assert_allclose(oracle, want, atol=1e-5, rtol=1e-5)


# name -> (op, channels of X, shape of the third input past K, attributes, output shape past K)
_EMPTY_BATCH_CASES = {
    "roi": (roi_opset.DEFORM_ROI_POOL, 8, [2, 2, 3],
            dict(pooled_height=2, pooled_width=3, spatial_scale=0.5, sampling_ratio=2, gamma=0.2), [8, 2, 3]),
    "psroi_rows": (roi_opset.DEFORM_PSROI_POOL, 2 * _ROWS * 4, [4, 2, 2],          # _ROWS channels per class
                   dict(spatial_scale=0.5, output_dim=2 * _ROWS, group_size=2, pooled_size=2, sample_per_part=2,
                        trans_std=0.1), [2 * _ROWS, 2, 2]),
    "psroi_values": (roi_opset.DEFORM_PSROI_POOL, 3 * 9, [6, 2, 2],                 # one channel per class
                     dict(spatial_scale=0.5, output_dim=3, group_size=3, pooled_size=3, part_size=2,
                          sample_per_part=2, trans_std=0.1), [3, 3, 3]),
    "psroi_no_trans": (roi_opset.DEFORM_PSROI_POOL, 2 * 4, [2, 2, 2],
                       dict(spatial_scale=0.5, output_dim=2, group_size=2, pooled_size=2, sample_per_part=2,
                            trans_std=0.1, no_trans=1), [2, 2, 2]),
}


def _typed_model(op, channels, third, elem, attrs) -> onnx.ModelProto:
    """float32 inputs cast to ``elem`` for the node (ONNX Runtime's Python API takes no bfloat16 arrays); outputs
    Y (``elem``) and Y as float32."""
    names = ["X", "rois", "offset" if op == roi_opset.DEFORM_ROI_POOL else "trans"]
    shapes = [[None, channels, None, None], [None, 5], [None, *third]]
    nodes = [helper.make_node("Cast", [n], [f"{n}_typed"], to=elem) for n in names]
    nodes += [helper.make_node(op, [f"{n}_typed" for n in names], ["Y"], domain=opset.DOMAIN, name="pool", **attrs),
              helper.make_node("Cast", ["Y"], ["Y_float"], to=TensorProto.FLOAT)]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(n, TensorProto.FLOAT, s)
                                           for n, s in zip(names, shapes)],
                              [helper.make_tensor_value_info("Y", elem, [None] * 4),
                               helper.make_tensor_value_info("Y_float", TensorProto.FLOAT, [None] * 4)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 22)])
    opset.attach_functions(model)
    onnx.checker.check_model(model, full_check=True)
    return model


@pytest.mark.parametrize("elem", [TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.BFLOAT16],
                         ids=["float32", "float16", "bfloat16"])
@pytest.mark.parametrize("case", list(_EMPTY_BATCH_CASES))
def test_bodies_pool_every_roi_of_an_empty_batch_to_zero(case, elem):
    """N = 0: every RoI's batch index lies outside [0, N), so each pools to 0 as in the kernels (batchIndexInside
    is false for an empty batch, before any box or offset is read: a NaN offset too), with the output shape
    (K, ...) and X's type, K = 0 included. The bodies' Gather (GatherElements) had failed on the empty table."""
    from dcn_deploy.backends.reference_evaluator import OracleEvaluator

    op, channels, third, attrs, out = _EMPTY_BATCH_CASES[case]
    model = _typed_model(op, channels, third, elem, attrs)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    type_name = {TensorProto.FLOAT: "float", TensorProto.FLOAT16: "float16", TensorProto.BFLOAT16: "bfloat16"}[elem]
    rois = np.array([[0, 1, 1, 8, 8], [-0.5, 2, 2, 9, 9], [float("nan"), 0, 0, 4, 4], [1, 3, 3, 4, 4]], np.float32)
    shifts = np.random.default_rng(16).standard_normal((4, *third)).astype(np.float32)
    shifts[1] = np.nan
    for k in (4, 0):
        arrays = dict(X=np.zeros((0, channels, 9, 10), np.float32), rois=rois[:k])
        arrays[model.graph.input[2].name] = shifts[:k]
        binding = session.io_binding()  # a bfloat16 output is only readable as an OrtValue
        for name, array in arrays.items():
            binding.bind_cpu_input(name, array)
        for name in ("Y", "Y_float"):
            binding.bind_output(name, "cpu")
        session.run_with_iobinding(binding)
        typed, as_float = binding.get_outputs()
        assert typed.data_type() == f"tensor({type_name})" and typed.shape() == [k, *out]
        assert as_float.numpy().shape == (k, *out) and not as_float.numpy().any()
        oracle_typed, oracle_float = OracleEvaluator(model).run(None, arrays)
        assert oracle_float.shape == (k, *out) and not oracle_float.any()
        assert str(oracle_typed.dtype) == ("float32" if elem == TensorProto.FLOAT else type_name)


def test_psroi_body_with_no_trans_pools_one_class_whatever_trans_holds():
    """no_trans=1 pools as one class (the kernels' rule): a trans of 3 classes, which do not divide output_dim 4,
    is ignored, in shape inference and in the body."""
    gen = torch.Generator().manual_seed(14)
    x = torch.randn(1, 4 * 4, 6, 6, generator=gen)
    rois = _rois(gen, 3, 1, 12.0)
    trans = torch.randn(3, 6, 2, 2, generator=gen)
    model = _model(roi_opset.DEFORM_PSROI_POOL, [[1, 16, 6, 6], [3, 5], [3, 6, 2, 2]], spatial_scale=0.5,
                   output_dim=4, group_size=2, pooled_size=2, sample_per_part=2, trans_std=0.1, no_trans=1)
    dims = onnx.shape_inference.infer_shapes(model, strict_mode=True).graph.output[0].type.tensor_type.shape.dim
    assert [d.dim_value for d in dims] == [3, 4, 2, 2]
    want = deform_psroi_pool(x, rois, None, 0.5, 4, 2, 2, 2, 2, 0.1, True)
    np.testing.assert_allclose(_run(model, [x.numpy(), rois.numpy(), trans.numpy()]), want.numpy(),
                               atol=1e-5, rtol=1e-5)


def test_bodies_run_in_float16():
    gen = torch.Generator().manual_seed(12)
    x = torch.randn(1, 8, 10, 10, generator=gen).half()
    rois = _rois(gen, 4, 1, 20.0).round().half()
    offset = (torch.randn(4, 2, 2, 2, generator=gen) * 0.3).half()
    model = _model(roi_opset.DEFORM_ROI_POOL, [[1, 8, 10, 10], [None, 5], [None, 2, 2, 2]], elem=TensorProto.FLOAT16,
                   pooled_height=2, pooled_width=2, spatial_scale=0.5, sampling_ratio=2)
    got = _run(model, [x.numpy(), rois.numpy(), offset.numpy()])
    assert got.dtype == np.float16
    np.testing.assert_allclose(got.astype(np.float32), deform_roi_pool(x, rois, offset, 2, 0.5, 2).float().numpy(),
                               atol=2e-3, rtol=2e-3)
    model = _model(roi_opset.DEFORM_PSROI_POOL, [[1, 8, 10, 10], [None, 5], [None, 2, 2, 2]], elem=TensorProto.FLOAT16,
                   spatial_scale=0.5, output_dim=2, group_size=2, pooled_size=2, sample_per_part=2, trans_std=0.1)
    got = _run(model, [x.numpy(), rois.numpy(), offset.numpy()])
    want = deform_psroi_pool(x, rois, offset, 0.5, 2, 2, 2, 2, 2, 0.1, False)
    np.testing.assert_allclose(got.astype(np.float32), want.float().numpy(), atol=2e-3, rtol=2e-3)


def _schema_defaults(op: str) -> dict:
    """The attributes the op's registered schema gives a default (docs/ops.md's table), name -> value."""
    attributes = onnx.defs.get_schema(op, opset.VERSION, opset.DOMAIN).attributes
    return {name: helper.get_attribute_value(a.default_value) for name, a in attributes.items()
            if a.default_value.type != onnx.AttributeProto.UNDEFINED}


def _without_attributes(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy whose dcn_deploy nodes carry no attributes: what a tool that drops default-valued ones leaves."""
    stripped = onnx.ModelProto()
    stripped.CopyFrom(model)
    for node in opset.domain_nodes(stripped):
        del node.attribute[:]
    return stripped


@pytest.mark.parametrize("op", [roi_opset.DEFORM_ROI_POOL, roi_opset.DEFORM_PSROI_POOL])
def test_a_node_leaving_every_attribute_at_its_default_inlines_and_runs_like_one_that_writes_them(op):
    """A node built with no attributes (all have defaults) gives what the node with the defaults written gives:
    (c) the same inferred output; (b) the same numbers in ONNX Runtime, which expands the function itself and
    applies its declared defaults (FunctionProto.attribute_proto), also when a later tool drops the attributes
    again; (a) the same numbers through onnx's inliner, then the checker and ONNX Runtime on the inlined graph.
    onnx's inliner ignores those declared defaults (it deletes a reference to an attribute the call does not set,
    leaving the body's Constant nodes empty), so attach_functions writes the defaults onto the call; attach_functions
    again restores a call stripped after it."""
    defaults = _schema_defaults(op)
    assert defaults and set(defaults) == {a.name for a in opset.get_definition(op).make_function(19).attribute_proto}
    gen = torch.Generator().manual_seed(17)
    x = torch.randn(2, 3 if op == roi_opset.DEFORM_ROI_POOL else 1, 9, 11, generator=gen)
    rois = _rois(gen, 6, 2, 9.0)
    third = torch.randn(6, 2, 1, 1, generator=gen)          # offset / trans for the default 1x1 output
    arrays = [x.numpy(), rois.numpy(), third.numpy()]
    shapes = [[None, x.shape[1], None, None], [None, 5], [None, 2, 1, 1]]
    written = _model(op, shapes, **defaults)
    want = _run(written, arrays)
    assert np.abs(want).max() > 0

    bare, stripped = _model(op, shapes), _without_attributes(written)
    inferred = [onnx.shape_inference.infer_shapes(m, strict_mode=True).graph.output[0] for m in (written, stripped)]
    assert inferred[0] == inferred[1]                                                          # (c)
    for model in (bare, stripped):                                                             # (b)
        np.testing.assert_array_equal(_run(model, arrays), want)
    for model in (bare, opset.attach_functions(stripped)):                                     # (a)
        inlined = inliner.inline_local_functions(model)
        onnx.checker.check_model(inlined, full_check=True)
        np.testing.assert_array_equal(_run(inlined, arrays), want)
        assert {a.name: helper.get_attribute_value(a) for a in model.graph.node[0].attribute} == defaults


def test_shape_inference_and_its_errors():
    model = _model(roi_opset.DEFORM_ROI_POOL, [[2, 5, 9, 11], ["k", 5], ["k", 2, 3, 4]],
                   pooled_height=3, pooled_width=4, sampling_ratio=2)
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    dims = inferred.graph.output[0].type.tensor_type.shape.dim
    assert [d.dim_param or d.dim_value for d in dims] == ["k", 5, 3, 4]
    model = _model(roi_opset.DEFORM_PSROI_POOL, [[1, 18, 9, 11], [7, 5], [7, 4, 3, 3]],
                   output_dim=2, group_size=3, pooled_size=3, sample_per_part=2)
    dims = onnx.shape_inference.infer_shapes(model, strict_mode=True).graph.output[0].type.tensor_type.shape.dim
    assert [d.dim_value for d in dims] == [7, 2, 3, 3]
    bad = [
        (roi_opset.DEFORM_ROI_POOL, [[2, 5, 9, 11], [3, 4], [3, 2, 2, 2]], dict(pooled_height=2, pooled_width=2), "rois dim 1"),
        (roi_opset.DEFORM_ROI_POOL, [[2, 5, 9, 11], [3, 5], [3, 2, 3, 3]], dict(pooled_height=2, pooled_width=2), "offset dim 2"),
        (roi_opset.DEFORM_ROI_POOL, [[2, 5, 9, 11], [3, 5], [3, 2, 2, 2]], dict(sampling_ratio=0), "sampling_ratio"),
        (roi_opset.DEFORM_PSROI_POOL, [[1, 17, 9, 9], [3, 5], [3, 2, 3, 3]],
         dict(output_dim=2, group_size=3, pooled_size=3), "X dim 1"),
        (roi_opset.DEFORM_PSROI_POOL, [[1, 18, 9, 9], [3, 5], [3, 6, 3, 3]],
         dict(output_dim=2, group_size=3, pooled_size=3), "divisible by num_classes"),
    ]
    for op, shapes, attrs, message in bad:
        names = ["X", "rois", "t"]
        node = helper.make_node(op, names, ["Y"], domain=opset.DOMAIN, **attrs)
        graph = helper.make_graph([node], "g", [helper.make_tensor_value_info(n, TensorProto.FLOAT, s)
                                                for n, s in zip(names, shapes)],
                                  [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)])
        m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19), helper.make_opsetid(opset.DOMAIN, 1)])
        with pytest.raises(onnx.shape_inference.InferenceError, match=message):
            onnx.shape_inference.infer_shapes(m, strict_mode=True)


class _Head(torch.nn.Module):
    def __init__(self, sampling_ratio=2):
        super().__init__()
        self.pack = DeformRoIPoolPack(3, 4, deform_fc_channels=16, spatial_scale=0.5, sampling_ratio=sampling_ratio)
        self.ps = DeformPSRoIPool(2, 2, 0.5, sample_per_part=2)
        self.plain = DeformRoIPool(2, 0.5, sampling_ratio=1)
        for p in self.parameters():
            torch.nn.init.normal_(p, std=0.1)

    def forward(self, x, rois, scores):
        return self.pack(x, rois), self.ps(scores, rois), self.plain(x, rois)


def test_export_verifies_in_stock_ort_with_dynamic_rois(tmp_path):
    from dcn_deploy.onnx.export import export

    gen = torch.Generator().manual_seed(13)
    head = _Head().eval()
    x, scores = torch.randn(2, 4, 10, 12, generator=gen), torch.randn(2, 8, 10, 12, generator=gen)
    other = (torch.randn(1, 4, 7, 9, generator=gen), _rois(gen, 9, 1, 14.0), torch.randn(1, 8, 7, 9, generator=gen))
    report = export(head, (x, _rois(gen, 5, 2, 24.0), scores), tmp_path / "head.onnx", dynamic=True,
                    verify_inputs=[(x, _rois(gen, 6, 2, 24.0), scores), other])
    assert report.verified
    assert report.op_counts == {"dcn_deploy::DeformRoIPool": 3, "dcn_deploy::DeformPSRoIPool": 2}
    model = onnx.load(str(tmp_path / "head.onnx"))
    assert {f.name for f in model.functions} >= {"DeformRoIPool", "DeformPSRoIPool"}
    assert {n.op_type for n in model.graph.node if n.domain == opset.DOMAIN} == {"DeformRoIPool", "DeformPSRoIPool"}


def test_exported_roi_model_verifies_and_benches_from_the_cli_on_random_boxes(tmp_path):
    # no --shape, no --input: the stored example shapes size the inputs, and the RoI input gets valid boxes
    # (random normal values would give batch indices outside the batch: an error in ONNX Runtime)
    from click.testing import CliRunner

    from dcn_deploy.cli import main
    from dcn_deploy.feeds import roi_inputs
    from dcn_deploy.onnx.export import export

    gen = torch.Generator().manual_seed(14)
    head = _Head().eval()
    x, scores = torch.randn(2, 4, 10, 12, generator=gen), torch.randn(2, 8, 10, 12, generator=gen)
    path = tmp_path / "head.onnx"
    export(head, (x, _rois(gen, 5, 2, 24.0), scores), path, dynamic=True)
    (rois_name,) = roi_inputs(path)
    assert rois_name == [i.name for i in onnx.load(str(path)).graph.input][1]
    verify = CliRunner().invoke(main, ["verify", str(path), "--against", "ort", "--seed", "3"])
    assert verify.exit_code == 0, verify.output
    bench = CliRunner().invoke(main, ["bench", str(path), "--iterations", "2", "--warmup", "0", "--no-progress"])
    assert bench.exit_code == 0, bench.output


def test_export_refuses_adaptive_sampling_naming_the_layer(tmp_path):
    from dcn_deploy.onnx.export import ExportError, export

    head = _Head(sampling_ratio=0).eval()
    args = (torch.randn(1, 4, 10, 12), torch.tensor([[0, 1.0, 1.0, 9.0, 9.0]]), torch.randn(1, 8, 10, 12))
    with pytest.raises(roi_opset.AdaptiveSamplingError,
                       match="'pack' use sampling_ratio=0.*layer.sampling_ratio = N, or dcn_deploy.ops.fix_adaptive"):
        export(head, args, tmp_path / "a.onnx")

    class Functional(torch.nn.Module):
        def forward(self, x, rois):
            return deform_roi_pool(x, rois, None, 2, 1.0, 0)

    with pytest.raises(ExportError, match="deform_roi_pool with sampling_ratio=0.*pass a fixed sampling_ratio N >= 1 "
                                          "in that deform_roi_pool call") as info:
        export(Functional().eval(), args[:2], tmp_path / "b.onnx", verify=False)
    assert isinstance(info.value, ValueError)  # bad input, as the layer's refusal above (exit 2 in the CLI)
    assert not (tmp_path / "a.onnx").exists() and not (tmp_path / "b.onnx").exists()


def _conv_then_psroi_model() -> onnx.ModelProto:
    """A 1x1 convolution (which converts to half) feeding DeformPSRoIPool whose boxes are in image pixels (1/4)."""
    pool = helper.make_node(roi_opset.DEFORM_PSROI_POOL, ["F", "rois", "trans"], ["Y"], domain=opset.DOMAIN,
                            name="pool", spatial_scale=0.25, output_dim=2, group_size=3, pooled_size=3,
                            part_size=3, sample_per_part=2, trans_std=0.1)
    conv = helper.make_node("Conv", ["X", "w"], ["F"], name="conv")
    weight = np.random.default_rng(0).standard_normal((18, 4, 1, 1)).astype(np.float32) * 0.5
    graph = helper.make_graph(
        [conv, pool], "g",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [1, 4, 64, 512]),
         helper.make_tensor_value_info("rois", TensorProto.FLOAT, [None, 5]),
         helper.make_tensor_value_info("trans", TensorProto.FLOAT, [None, 2, 3, 3])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [None, 2, 3, 3])],
        [onnx.numpy_helper.from_array(weight, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])
    opset.attach_functions(model)
    return model


def test_fp16_conversion_keeps_roi_pooling_in_float32(monkeypatch):
    """Box corners share the feature map's type: in float16 a corner above 1024 px moves by up to 0.5 px, which
    moves the pooled values. The conversion keeps the RoI node (and so its boxes) in float32."""
    from dcn_deploy.onnx import precision

    gen = torch.Generator().manual_seed(13)
    x = torch.randn(1, 4, 64, 512, generator=gen)
    # x corners from 1025 to ~1950 px, y corners within the 256 px high image (2048 wide)
    xy = torch.rand(40, 2, generator=gen) * torch.tensor([150.0, 800.0]) + torch.tensor([0.0, 1025.0])
    rois = torch.cat([torch.zeros(40, 1), xy, xy + 9 + torch.rand(40, 2, generator=gen) * 90], dim=1)
    rois = rois[:, [0, 2, 1, 4, 3]]  # (batch, x1, y1, x2, y2)
    trans = torch.randn(40, 2, 3, 3, generator=gen)
    arrays = [x.numpy(), rois.numpy(), trans.numpy()]
    model = _conv_then_psroi_model()
    want = _run(model, arrays)

    half, report = precision.convert_precision(model, "fp16")
    assert ("pool", roi_opset.DEFORM_PSROI_POOL, "rule: box coordinates") in report.kept_fp32
    kept_error = np.abs(_run(half, arrays) - want).max() / np.abs(want).max()

    monkeypatch.setattr(precision, "KEEP_FP32_DOMAIN_OPS", {})  # what the conversion did before the rule
    all_half, _ = precision.convert_precision(model, "fp16")
    half_error = np.abs(_run(all_half, arrays) - want).max() / np.abs(want).max()
    assert kept_error < 2e-3 < half_error, (kept_error, half_error)


def test_half_model_io_keeps_roi_boxes_in_float32():
    """io_dtype="half" makes the image (and trans) half but not the RoI boxes: a float16 input would round a corner
    to 1 px past 1024 before the float32 pooling ever saw it."""
    from dcn_deploy.onnx import precision

    model = _conv_then_psroi_model()
    half, _ = precision.convert_precision(model, "fp16", io_dtype="half")
    types = {vi.name: vi.type.tensor_type.elem_type for vi in half.graph.input}
    assert types == {"X": TensorProto.FLOAT16, "rois": TensorProto.FLOAT, "trans": TensorProto.FLOAT16}
    gen = torch.Generator().manual_seed(15)
    x = torch.randn(1, 4, 64, 512, generator=gen)
    rois = torch.tensor([[0.0, 1100.3, 20.7, 1300.9, 180.2], [0.0, 1500.6, 3.1, 1901.4, 250.5]])
    trans = torch.randn(2, 2, 3, 3, generator=gen) * 0.1
    want = _run(model, [x.numpy(), rois.numpy(), trans.numpy()])
    got = _run(half, [x.half().numpy(), rois.numpy(), trans.half().numpy()])
    assert got.dtype == np.float16
    np.testing.assert_allclose(got.astype(np.float32), want, atol=5e-3 * np.abs(want).max(), rtol=0)


def test_inspect_shows_float_attributes_as_written(tmp_path):
    """ONNX keeps float attributes in float32: inspect prints gamma=0.1, not 0.10000000149011612."""
    from dcn_deploy import inspect_model

    node = helper.make_node("DeformRoIPool", ["x", "rois", "offset"], ["y"], domain=opset.DOMAIN, name="pool",
                            pooled_height=2, pooled_width=2, spatial_scale=0.0625, sampling_ratio=2, gamma=0.1)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8, 8]),
                                            helper.make_tensor_value_info("rois", TensorProto.FLOAT, [3, 5]),
                                            helper.make_tensor_value_info("offset", TensorProto.FLOAT, [3, 2, 2, 2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, 4, 2, 2])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19), helper.make_opsetid(opset.DOMAIN, 1)])
    onnx.save(model, str(tmp_path / "pool.onnx"))
    (info,) = inspect_model(tmp_path / "pool.onnx")["deformable_nodes"]
    assert info["attributes"]["gamma"] == 0.1 and info["attributes"]["spatial_scale"] == 0.0625
