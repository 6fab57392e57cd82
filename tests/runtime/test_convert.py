"""Arrays converted to a tensor's dtype: rounding is fine, changing what a value is is refused."""

import ml_dtypes
import numpy as np
import pytest
import tensorflow as tf

import graphscope as gs
from graphscope.runtime.convert import to_dtype

FITS = [  # (value, dtype): accepted, equal to numpy's own conversion
    (np.float32([0.1, -3.5, 6e4]), "float16"),  # rounded within range
    (np.float64([1e-30]), "float16"),  # underflows to 0: rounding, not overflow
    (np.float64([np.inf, -np.inf, np.nan]), "float16"),  # already not finite: stays so
    (np.int64([2**62]), "float32"),
    (np.float64([2.0, -3.0, 0.0]), "int32"),  # whole numbers
    (np.int64([-128, 127]), "int8"),
    (np.int32([0, 255]), "uint8"),
    (np.array([True, False]), "int8"),
    (np.float32([3.0]), "complex64"),
    (np.float64([-(2.0**63)]), "int64"),
    (np.float32([1e38]), "bfloat16"),
    # ml_dtypes' narrow floats and ints (numpy kind "V") into wider dtypes: exact
    (np.array([1.5, -3e38, np.inf, np.nan], ml_dtypes.bfloat16), "float32"),
    (np.array([1.5, -7.0], ml_dtypes.bfloat16), "float64"),
    (np.array([448.0, -0.015625], ml_dtypes.float8_e4m3fn), "float16"),
    (np.array([57344.0, 0.5], ml_dtypes.float8_e5m2), "float32"),
    (np.array([3.0, -256.0], ml_dtypes.bfloat16), "int32"),  # whole numbers
    (np.array([-8, 7], ml_dtypes.int4), "int8"),
    (np.array([0, 15], ml_dtypes.uint4), "float32"),
    # numbers that are all 0 or 1 into bool, and bool into numbers
    (np.int64([1, 0, 1]), "bool"),
    (np.uint8([0, 1]), "bool"),
    (np.float32([0.0, -0.0, 1.0]), "bool"),
    (np.array([1.0, 0.0], ml_dtypes.bfloat16), "bool"),
    (np.int32([], ), "bool"),
    (np.array([True, False]), "float32"),
    (np.array([True, False]), "bfloat16"),
    (np.array([True, False]), "uint8"),
]
REFUSED = [  # (value, dtype, what the message says)
    (np.float32([1e6]), "float16", r", whose range is -65504 to 65504, .* from 1e\+06 to 1e\+06 \(1 of 1\)"),
    (np.int64([100_000, 1]), "float16", r"from 100000 to 100000 \(1 of 2\) beyond it, which would become inf"),
    (np.float64([1e40]), "float32", r"would become inf"),
    (np.float64([1e39]), "bfloat16", r", whose range is -3.38953e\+38"),
    (np.complex128([1e40 + 1j]), "complex64", r"magnitudes from 1e\+40"),
    (np.float64([0.5, 1.0]), "int32", r"not whole numbers \(1 of 2, such as 0.5\), which would be truncated"),
    (np.float64([np.nan]), "int32", r"cannot hold nan or inf, but 1 of its 1 values are; replace them first"),
    (np.int64([300, -5]), "int8", r", whose range is -128 to 127, but it holds values from -5 to 300, which would wrap"),
    (np.int32([-1]), "uint8", r"from -1 to -1, which would wrap around"),
    (np.uint64([2**64 - 1]), "int64", r"wrap around"),
    (np.float64([2.0**63]), "int64", r"wrap around"),
    (np.complex64([1j]), "float32", r"got an array of dtype complex64, which would lose information as float32"),
    (np.complex64([1, 0]), "bool", r"lose information as bool"),
    (np.int64([2, 0, 1]), "bool", r"which holds 0 and 1, but it holds other values \(1 of 3, such as 2\); "
                                  r"compare them first \(x != 0\)$"),
    (np.float32([0.5, np.nan, 1.0]), "bool", r"other values \(2 of 3, such as 0.5\)"),
    (np.array([-1.0], ml_dtypes.bfloat16), "bool", r"such as -1\)"),
    (np.array([1e5], ml_dtypes.bfloat16), "float16", r", whose range is -65504 to 65504, .* which would become inf"),
    (np.array([0.5], ml_dtypes.bfloat16), "int32", r"not whole numbers \(1 of 1, such as 0.5\)"),
    (np.array([300.0], ml_dtypes.bfloat16), "int8", r"from 300 to 300, which would wrap around"),
    (np.array([-8], ml_dtypes.int4), "uint8", r"from -8 to -8, which would wrap around"),
    (np.array(["a"]), "float32", r" a numeric array \(float32\), got an array of dtype <U1"),
    (np.float32([1.5]), "string", r": text, as str, bytes or object arrays, got an array of dtype float32; "
                                    r"format the numbers first \(x.astype\(str\)\)$"),
]


@pytest.mark.parametrize("value, dtype", FITS, ids=[f"{v.dtype}->{d}" for v, d in FITS])
def test_values_the_dtype_holds_convert_as_numpy_converts_them(value, dtype):
    got = to_dtype(value, dtype, "x")
    want = value.astype(got.dtype)
    assert got.dtype.name == dtype
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("value, dtype, says", REFUSED, ids=[f"{v.dtype}->{d}" for v, d, _ in REFUSED])
def test_values_the_dtype_cannot_hold_are_refused(value, dtype, says):
    with pytest.raises(gs.InputError, match=f"^the edit of 'h:0' (expects {dtype}|must be)" + ".*" + says):
        to_dtype(value, dtype, "the edit of 'h:0'")


def test_text_as_numpy_writes_it_feeds_a_string_input():
    """Unicode (`<U`), bytes (`S`) and object arrays of text all feed a tf.string input, as
    TensorFlow itself takes them: what the graph sees is the text's UTF-8 bytes."""
    @tf.function(input_signature=[tf.TensorSpec((None,), tf.string)])
    def lengths(text):
        return tf.strings.length(text, unit="UTF8_CHAR")

    scope = gs.trace(lengths, quiet=True)
    words = ["a", "héllo", ""]
    for given in (np.array(words), np.array([w.encode() for w in words]), np.array(words, object)):
        (out,) = scope.run(scope.outputs, given).values()
        np.testing.assert_array_equal(out, [len(w) for w in words])



@pytest.mark.parametrize("value", [np.array([1, 2], object), np.array(["a", None], object)], ids=["ints", "none"])
def test_an_object_array_holding_other_than_text_is_refused_for_a_string_input(value):
    """An object array is taken as it is for a tf.string input; one holding numbers or None gave
    TensorFlow's ValueError ('Failed to convert a NumPy array to a Tensor (Unsupported object
    type int)')."""
    with pytest.raises(gs.InputError, match=r"^input 'w' expects string: text, .*holds (int|NoneType)"):
        to_dtype(value, "string", "input 'w'")


def test_a_sparse_tensor_is_its_dense_values_and_a_ragged_one_is_refused():
    """A model with a `sparse=True` input is traced dense (README): a SparseTensor fed to it is
    its dense array, implicit zeros included; a RaggedTensor has no dense value of its own."""
    dense = np.array([[0.0, 1.5, 0.0], [2.0, 0.0, 0.0]], np.float32)
    np.testing.assert_array_equal(to_dtype(tf.sparse.from_dense(dense), "float32", "x"), dense)
    np.testing.assert_array_equal(to_dtype(tf.sparse.from_dense(dense), "float64", "x"), dense)
    with pytest.raises(gs.InputError, match=r"^input 'ids' takes a dense array, got a tf.RaggedTensor; pad it"):
        to_dtype(tf.ragged.constant([[1, 2], [3]]), "int64", "input 'ids'")


def test_a_sparse_tensor_in_any_order_is_its_dense_values_and_a_repeated_index_is_refused():
    """Keras takes a SparseTensor whose indices are not in row-major order; its dense value was
    refused with TensorFlow's InvalidArgumentError ('indices[1] = [0,0] is out of order'), as was
    a repeated index, which has no one dense value."""
    unordered = tf.SparseTensor([[1, 1], [0, 0]], [-2.0, -7.0], [2, 3])
    np.testing.assert_array_equal(to_dtype(unordered, "float32", "x"), [[-7.0, 0, 0], [0, -2.0, 0]])
    with pytest.raises(gs.InputError, match=r"^input 'x' is a tf.SparseTensor with no dense value: .*repeated"):
        to_dtype(tf.SparseTensor([[0, 0], [0, 0]], [1.0, 2.0], [2, 3]), "float32", "input 'x'")
    with pytest.raises(gs.InputError, match=r"^input 'x' is a tf.SparseTensor with no dense value: .*bounds"):
        to_dtype(tf.SparseTensor([[0, 5]], [1.0], [2, 3]), "float32", "input 'x'")


def test_a_matching_dtype_is_passed_through_uncopied():
    a = np.zeros(3, np.float32)
    assert to_dtype(a, "float32", "x") is a


def test_a_bfloat16_input_and_an_int_mask_for_a_bool_input_run_as_their_exact_values():
    """End to end: the feeds the review found refused (bfloat16 into float32, 0/1 ints into
    bool) give what numpy gives on the same values."""
    @tf.function(input_signature=[tf.TensorSpec((None, 3), tf.float32), tf.TensorSpec((None, 3), tf.bool)])
    def gate(x, keep):
        return tf.where(keep, x * 2.0, -1.0)

    scope = gs.trace(gate, quiet=True)
    x = np.array([[1.5, -2.25, 1e38]], ml_dtypes.bfloat16)
    keep = np.array([[1, 0, 1]], np.int64)
    (out,) = scope.run(scope.outputs, [x, keep]).values()
    np.testing.assert_array_equal(out, np.where(keep == 1, x.astype(np.float64) * 2.0, -1.0).astype(np.float32))
    with pytest.raises(gs.InputError, match=r"expects bool, which holds 0 and 1, but it holds other values"):
        scope.run(scope.outputs, [x, keep * 2])
