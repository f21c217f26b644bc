"""Records -> an Arrow table: the record's own columns plus typed columns decoded from the payload.

Columns, in this order:

    partition int32 | offset int64 | epoch int32 | ts timestamp[ms] (UTC) | key binary | value binary
    | headers list<struct<name: string, value: binary>> | decode_error string | <decoded fields...>

- `value` is always the raw payload, byte for byte (replay reproduces it exactly); the decoded fields add to it.
- A payload the topic's decoder refuses keeps its bytes, gets null typed columns and the decoder's reason in
  `decode_error` (e.g. "bad_json").
- A decoded field named like a record column gets the prefix `payload_` (sensor JSON has its own `ts` and
  `value`: they become `payload_ts` and `payload_value`).
- Types of decoded fields, per batch: bool, int64, float64 or string. A field whose values mix ints and floats is
  float64; any other mix (a number and a text, say) is string, the non-text values written as JSON. Across
  batches and files the types may differ: readers unify them by name (DuckDB `union_by_name`: int64 and float64
  read as DOUBLE, anything with a string as VARCHAR), so history is never rewritten when a field appears or widens.

Two ways in: `to_table` from Record tuples, and `slices_to_table` straight from decoded frame bodies
(`Log.read_columns`), which the tierer, hot queries and replay use: the frames' fixed-width arrays become Arrow
buffers and Arrow cuts every key and payload out of the bodies, with no Python object per record (a Record per row
capped tiering at ~0.55 M rows/s on the build machine before any decoding). Both give the same table (a test
compares them over random frames).

The JSON decoder has two fast paths, used only where they give the same result as the per-record decoder the
gateway injects (`edge.decoders.decode_json` semantics: objects only, nested objects flattened with ".", scalars
only); anything else falls back to the per-record path. Both put the payloads, one per line, through Arrow's C++
JSON reader, which builds typed columns directly (~1.4 M rows/s on one core, against ~0.45 M for a Python decode
per record plus column building). `_json_lines` checks the payloads as a whole, without a Python object per
payload (see its docstring for why that is enough); `_json_fast` checks each payload with msgspec first and reads
the valid ones, for batches with some undecodable payloads. (One difference is allowed: a field that is null in
every row of a batch may be a column in one path and absent in the other; both read as NULL.)
"""

from __future__ import annotations

import io
import struct
from array import array
from collections.abc import Mapping, Sequence
from itertools import chain, pairwise, repeat
from operator import itemgetter
from typing import Any

import msgspec
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pa_json

from ..frame import FrameError, decode_headers
from ..reads import FrameSlice
from ..record import Record
from .manifest import Decode, TopicDecoder
from .parquet import key_order

RECORD_COLUMNS = ("partition", "offset", "epoch", "ts", "key", "value", "headers", "decode_error")
PAYLOAD_PREFIX = "payload_"
HEADERS_TYPE = pa.list_(pa.struct([("name", pa.string()), ("value", pa.binary())]))
TS_TYPE = pa.timestamp("ms")
RECORD_SCHEMA = pa.schema([
    ("partition", pa.int32()), ("offset", pa.int64()), ("epoch", pa.int32()), ("ts", TS_TYPE),
    ("key", pa.binary()), ("value", pa.binary()), ("headers", HEADERS_TYPE), ("decode_error", pa.string()),
])
_SCALAR_TYPES = (pa.types.is_null, pa.types.is_boolean, pa.types.is_int64, pa.types.is_float64, pa.types.is_string)
_I64_MIN, _I64_MAX = -(2**63), 2**63 - 1

_offset, _epoch, _ts, _key, _value, _headers = (itemgetter(i) for i in (2, 3, 4, 5, 6, 7))
_object_check = msgspec.json.Decoder(msgspec.defstruct("_AnyObject", []))
_to_json = msgspec.json.Encoder()


def column_name(field: str) -> str:
    return PAYLOAD_PREFIX + field if field in RECORD_COLUMNS else field


# -- the record's own columns ----------------------------------------------------------------------------------------


def record_arrays(records: Sequence[Record]) -> list[pa.Array]:
    """The first seven columns (all but decode_error), C-level passes over the records."""
    n = len(records)
    parts = {r[1] for r in (records[0], records[-1])}
    partition = pa.array([records[0][1]] * n, pa.int32()) if len(parts) == 1 else pa.array(
        [r[1] for r in records], pa.int32())
    keys = list(map(_key, records))
    headers = list(map(_headers, records))
    if any(headers):
        hdr = pa.array([[{"name": k, "value": v} for k, v in h] if h else None for h in headers], HEADERS_TYPE)
    else:
        hdr = pa.nulls(n, HEADERS_TYPE)
    return [
        partition,
        pa.array(list(map(_offset, records)), pa.int64()),
        pa.array(list(map(_epoch, records)), pa.int32()),
        pa.array(list(map(_ts, records)), TS_TYPE),
        pa.nulls(n, pa.binary()) if keys.count(None) == n else pa.array(keys, pa.binary()),
        pa.array(list(map(_value, records)), pa.binary()),
        hdr,
    ]


def slice_arrays(slices: Sequence[FrameSlice], partition: int, *, by_key: bool = False) -> list[pa.Array]:
    """`record_arrays` straight from decoded frame bodies (`Log.read_columns`): the fixed-width fields go from the
    frames' arrays into Arrow buffers and every key, value and headers blob is cut out of the bodies by Arrow, so
    no Python object is made per record (a Record tuple per row capped tiering at ~0.55 M rows/s).

    `by_key`: rows in `sort_for_compression` order (by key, then offset), sorted before the payloads are cut out
    so that they are copied once."""
    if not slices:
        return [pa.array([], f.type) for f in RECORD_SCHEMA][:7]
    bodies = [s.body for s in slices]
    heads = [b.header for b in bodies]
    n = sum(h.record_count for h in heads)
    deltas, klens, vlens, hlens = array("i"), array("i"), array("i"), array("I")
    stamps = array("q")
    for b in bodies:
        deltas += b.ts_deltas
        klens += b.klens
        vlens += b.vlens
        hlens += b.hlens
        stamps += array("q", (b.header.first_ts,)) * b.header.record_count
    ts = pc.add(_from_buffer(pa.int32(), n, deltas).cast(pa.int64()), _from_buffer(pa.int64(), n, stamps)).cast(
        TS_TYPE)
    if all(a.next_offset == b.base_offset for a, b in pairwise(heads)):
        offsets = pc.add(_arange(n).cast(pa.int64()), heads[0].base_offset)
    else:  # a gap (a quarantined segment) between frames
        offsets = pa.array(chain.from_iterable(range(h.base_offset, h.next_offset) for h in heads), pa.int64())
    epoch = heads[0].epoch
    if all(h.epoch == epoch for h in heads):
        epochs = pa.repeat(pa.scalar(epoch, pa.int32()), n)
    else:
        epochs = pa.array(chain.from_iterable(repeat(h.epoch, h.record_count) for h in heads), pa.int32())
    data = pa.py_buffer(b"".join(memoryview(b.raw)[b.data_start:] for b in bodies))
    no_key = klens.count(-1)
    headerless = hlens.count(0) == n
    first, last = slices[0], slices[-1]
    lo, hi = first.first, n - (last.body.header.record_count - last.end)  # the wanted rows of the frames
    if no_key == n and headerless:  # values end to end: nothing to sort by, nothing to cut apart
        values = _binary(n, vlens, data)
        arrays = [offsets, epochs, ts, pa.nulls(n, pa.binary()), values, pa.nulls(n, HEADERS_TYPE)]
        return [pa.repeat(pa.scalar(partition, pa.int32()), hi - lo), *(a.slice(lo, hi - lo) for a in arrays)]
    # key, value and headers alternate in the bodies: cut all of them, then take each kind apart
    stride = 2 if headerless else 3
    lens = array("i", bytes(4 * stride * n))
    lens[0::stride] = array("i", map(max, klens, repeat(0))) if no_key else klens
    lens[1::stride] = vlens
    if not headerless:
        lens[2::stride] = array("i", hlens)
    pieces = _binary(stride * n, lens, data)
    starts = pc.multiply(_arange(n), stride)
    keys = pieces.take(starts)
    if no_key:
        keys = pc.if_else(pc.equal(_from_buffer(pa.int32(), n, klens), -1), pa.scalar(None, pa.binary()), keys)
    if lo or hi < n:
        starts, keys, offsets, epochs, ts = (a.slice(lo, hi - lo) for a in (starts, keys, offsets, epochs, ts))
    if by_key and hi - lo > 1 and keys.null_count < hi - lo:
        order = key_order(keys)
        starts, keys, offsets, epochs, ts = (a.take(order) for a in (starts, keys, offsets, epochs, ts))
    values = pieces.take(pc.add(starts, 1))
    hdr = pa.nulls(hi - lo, HEADERS_TYPE) if headerless else _header_lists(pieces.take(pc.add(starts, 2)))
    return [pa.repeat(pa.scalar(partition, pa.int32()), hi - lo), offsets, epochs, ts, keys, values, hdr]


def _arange(n: int) -> pa.Array:
    """0, 1, ..., n - 1 as int32, computed by Arrow."""
    return pc.subtract(pc.cumulative_sum(pa.repeat(pa.scalar(1, pa.int32()), n)), 1)


def _header_lists(blobs: pa.Array) -> pa.Array:
    rows = []
    for blob in blobs.to_pylist():
        try:
            rows.append([{"name": k, "value": v} for k, v in decode_headers(blob)] if blob else None)
        except (FrameError, struct.error, UnicodeDecodeError) as exc:
            raise FrameError("bad_headers", str(exc)) from exc
    return pa.array(rows, HEADERS_TYPE)


def _from_buffer(type_: pa.DataType, n: int, values: array[int]) -> pa.Array:
    return pa.Array.from_buffers(type_, n, [None, pa.py_buffer(values)])


def _binary(n: int, lens: array[int], data: pa.Buffer) -> pa.Array:
    """n binary values of lengths `lens`, end to end in `data`."""
    ends = pc.cumulative_sum_checked(_from_buffer(pa.int32(), n, lens))
    offsets = pa.concat_arrays([pa.array([0], pa.int32()), ends])
    return pa.Array.from_buffers(pa.binary(), n, [None, offsets.buffers()[1], data])


def to_table(records: Sequence[Record], decoder: TopicDecoder | None, *, threads: bool = False) -> pa.Table:
    """One Arrow table for `records` (any order; usually one chunk of one partition)."""
    return _with_decoded(record_arrays(records), decoder, threads)


def slices_to_table(slices: Sequence[FrameSlice], partition: int, decoder: TopicDecoder | None, *,
                    threads: bool = False, by_key: bool = False) -> pa.Table:
    """`to_table` for the records of `Log.read_columns` (the tierer's path); `by_key` as in `slice_arrays`."""
    return _with_decoded(slice_arrays(slices, partition, by_key=by_key), decoder, threads)


def _with_decoded(cols: list[pa.Array], decoder: TopicDecoder | None, threads: bool) -> pa.Table:
    names = list(RECORD_COLUMNS)
    n = len(cols[1])
    if decoder is None or decoder.spec.kind == "raw":
        cols.append(pa.nulls(n, pa.string()))
        return pa.Table.from_arrays(cols, names=names)
    typed, errors = decode_columns(cols[5], decoder, threads=threads)
    cols.append(pa.nulls(n, pa.string()) if errors.count(None) == n else pa.array(errors, pa.string()))
    for name, arr in typed:
        names.append(name)
        cols.append(arr)
    return pa.Table.from_arrays(cols, names=names)


# -- decoded columns -------------------------------------------------------------------------------------------------


def decode_columns(values: Sequence[bytes] | pa.Array, decoder: TopicDecoder, *, threads: bool = False
                   ) -> tuple[list[tuple[str, pa.Array]], list[str | None]]:
    """(typed columns, decode error per row) for payloads `values` (bytes, or an Arrow binary array)."""
    if decoder.spec.kind == "json":
        arr = values if isinstance(values, pa.Array) else pa.array(values, pa.binary())
        fast = _json_lines(arr, threads)
        if fast is not None:
            return fast
        fast = _json_fast(_pylist(values), decoder, threads)
        if fast is not None:
            return fast
    return per_record(_pylist(values), decoder.decode)


def _pylist(values: Sequence[bytes] | pa.Array) -> list[bytes]:
    return values.to_pylist() if isinstance(values, pa.Array) else list(values)


def per_record(values: Sequence[bytes], decode: Decode) -> tuple[list[tuple[str, pa.Array]], list[str | None]]:
    """The general path: the injected decoder on each payload, then one typed column per field seen."""
    rows: list[Mapping[str, Any]] = []
    errors: list[str | None] = [None] * len(values)
    empty: Mapping[str, Any] = {}
    for i, v in enumerate(values):
        try:
            rows.append(decode(v))
        except Exception as exc:  # whatever the injected decoder raises marks the payload undecodable
            rows.append(empty)
            errors[i] = _reason(exc)
    fields = dict.fromkeys(chain.from_iterable(rows))
    return [(column_name(f), typed_array([r.get(f) for r in rows])) for f in fields], errors


def _reason(exc: Exception) -> str:
    reason = getattr(exc, "reason", None)
    return reason if isinstance(reason, str) and reason else type(exc).__name__


def typed_array(values: list[Any]) -> pa.Array:
    """One column from Python values: null < bool < int64 < float64 < string (see the module doc)."""
    kinds = set(map(type, values))
    kinds.discard(type(None))
    if not kinds:
        return pa.nulls(len(values))
    if kinds == {bool}:
        return pa.array(values, pa.bool_())
    if kinds == {int}:
        present = [v for v in values if v is not None]
        if min(present) >= _I64_MIN and max(present) <= _I64_MAX:
            return pa.array(values, pa.int64())
    elif (kinds <= {int, float} and int in kinds) or kinds == {float}:
        present = [v for v in values if v is not None]
        if all(isinstance(v, float) or _I64_MIN <= v <= _I64_MAX for v in present):
            # Widen ints to float here: Arrow refuses an int it cannot represent exactly (above 2**53), which a
            # sensor can send; the column is float64 by the widening rule, and float() rounds as JSON readers do.
            return pa.array([v if v is None or isinstance(v, float) else float(v) for v in values], pa.float64())
    elif kinds == {str}:
        return pa.array(values, pa.string())
    return pa.array([v if v is None or isinstance(v, str) else _to_json.encode(v).decode() for v in values],
                    pa.string())


def _json_lines(values: pa.Array, threads: bool) -> tuple[list[tuple[str, pa.Array]], list[str | None]] | None:
    """The fast path when every payload is plainly one JSON object, checked without a Python object per payload:
    each payload starts with "{" and ends with "}" and holds no line break, and Arrow reads exactly one row per
    line. That is enough: a line that ends inside an object cannot be continued by a line starting with "{" (the
    reader fails), so every line holds at least one whole object, and n objects on n lines is one each. What is
    left is where Arrow's parser is laxer than the gateway's decoder: NaN and Infinity literals, caught by looking
    for them in the float columns. None: not plainly JSON objects; `_json_fast` checks each payload and decides."""
    n = len(values)
    if n == 0 or values.null_count or pc.min(pc.binary_length(values)).as_py() < 2:
        return None
    if not (pc.all(pc.starts_with(values, "{")).as_py() and pc.all(pc.ends_with(values, "}")).as_py()):
        return None
    if _has_line_break(values):
        return None
    buf = pc.binary_join_element_wise(values, b"", b"\n").buffers()[2].to_pybytes()
    table = _read_json(buf, threads, None)
    if table is None or table.num_rows != n:
        return None
    cols = _typed_columns(table, buf, threads, n)
    if cols is None:
        return None
    for _, arr in cols:
        if pa.types.is_floating(arr.type) and not pc.all(pc.is_finite(arr)).as_py():
            return None  # NaN or Infinity: not JSON to the gateway's decoder
    return cols, [None] * n


def _has_line_break(values: pa.Array) -> bool:
    """Whether any of the binary `values` holds a CR or LF: two memchr scans over their bytes, no copy per value."""
    n = len(values)
    offsets = pa.Array.from_buffers(pa.int32(), n + 1, [None, values.buffers()[1]], offset=values.offset)
    lo, hi = offsets[0].as_py(), offsets[n].as_py()
    data = values.buffers()[2]
    if data is None or hi == lo:
        return False
    raw: bytes = data.slice(lo, hi - lo).to_pybytes()
    return raw.find(b"\n") >= 0 or raw.find(b"\r") >= 0


def _json_fast(values: list[bytes], decoder: TopicDecoder, threads: bool
               ) -> tuple[list[tuple[str, pa.Array]], list[str | None]] | None:
    """Arrow's JSON reader over the newline-joined payloads, or None where it would not match `per_record`."""
    n = len(values)
    if n == 0:
        return [], []
    buf = b"\n".join(values)
    # One line per payload, or the reader's rows would not line up with the records.
    if buf.count(b"\n") != n - 1 or buf.count(b"\r") or not min(map(len, values)):
        return None
    errors: list[str | None] = [None] * n
    good: list[int] | None = None
    try:
        list(map(_object_check.decode, values))  # ~8 M/s: valid JSON objects only, exactly as msgspec sees them
    except (msgspec.DecodeError, msgspec.ValidationError):
        good = []
        for i, v in enumerate(values):
            try:
                _object_check.decode(v)
                good.append(i)
            except (msgspec.DecodeError, msgspec.ValidationError):
                errors[i] = _decoder_reason(decoder.decode, v)
        if not good:
            return [], errors
        buf = b"\n".join(values[i] for i in good)
    table = _read_json(buf, threads, None)
    if table is None:
        return None
    rows = len(good) if good is not None else n
    if table.num_rows != rows:
        return None
    cols = _typed_columns(table, buf, threads, rows)
    if cols is None:
        return None
    if good is not None:
        index: list[int | None] = [None] * n
        for j, i in enumerate(good):
            index[i] = j
        take = pa.array(index, pa.int64())
        cols = [(name, arr.take(take)) for name, arr in cols]
    return cols, errors


def _typed_columns(table: pa.Table, buf: bytes, threads: bool, rows: int) -> list[tuple[str, pa.Array]] | None:
    """The decoder's columns from what Arrow read: timestamps back to text, nested objects flattened with ".",
    scalars only. None where that would not match the per-record decoder."""
    stamps = [f.name for f in table.schema if pa.types.is_timestamp(f.type) or pa.types.is_date(f.type)]
    if stamps:  # Arrow infers ISO 8601 strings as timestamps; the decoder keeps them as text
        table = _read_json(buf, threads, pa.schema([(s, pa.string()) for s in stamps]))
        if table is None or table.num_rows != rows:
            return None
    while any(pa.types.is_struct(f.type) for f in table.schema):
        if any(pa.types.is_struct(f.type) and f.type.num_fields == 0 for f in table.schema):
            return None
        table = table.flatten()
    if not all(any(ok(f.type) for ok in _SCALAR_TYPES) for f in table.schema):
        return None  # lists (the decoder writes them as JSON text) and anything unusual
    if len(set(table.column_names)) != table.num_columns:
        return None
    return [(column_name(name), table.column(name).combine_chunks()) for name in table.column_names]


def _read_json(buf: bytes, threads: bool, strings: pa.Schema | None) -> pa.Table | None:
    parse = pa_json.ParseOptions(newlines_in_values=False)
    if strings is not None:
        parse = pa_json.ParseOptions(newlines_in_values=False, explicit_schema=strings,
                                     unexpected_field_behavior="infer")
    # One block for the whole buffer: Arrow infers a column's type per block and fails on a conflict across them.
    opts = pa_json.ReadOptions(use_threads=threads, block_size=max(1 << 20, len(buf) + 1))
    try:
        return pa_json.read_json(io.BytesIO(buf), read_options=opts, parse_options=parse)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
        return None  # a type conflict or a value Arrow cannot hold: the per-record path decides


def _decoder_reason(decode: Decode, value: bytes) -> str:
    try:
        decode(value)
    except Exception as exc:  # the injected decoder's own reason, as the per-record path would record it
        return _reason(exc)
    return "undecodable"
