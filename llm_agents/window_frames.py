"""Windows as DataFrames: the form in which the synthesizer, its checks and baselines trade data.

A *window frame* is a DataFrame of flow rows (FlowRecord columns) plus three columns:
`window_id`, `label` and `provenance`, and optionally `view` ("src" when absent) and the
`inference.history.HISTORY_FEATURES` columns: what the window's host had done when each
flow came, as the detector computed it. The rows of one window are contiguous and in time
order. Provenance says where a window came from: ``"real"``, ``"llm:<model>"``,
``"stat:<generator>"`` or ``"smote"``. A window without history columns (synthetic
windows) is taken as its host's whole history.

    >>> real = windows_frame(flows_df, k=8)           # window real flows as the stream would
    >>> x, mask, labels, prov = window_tensors(real, k=8)   # [n, F, K], [n, K], [n], [n]
    >>> s = window_summary(x, mask)                   # [n, 4F + 1] for sklearn models

Synthetic windows get identities from `SyntheticIdentity`: a source address of their own
in 198.18.0.0/16 and destinations in 198.19.0.0/16 (RFC 2544's benchmarking block, never a
production address), flow ids,
destination addresses and timestamps, so that they validate as FlowRecords and
`inference.windowing.windows_from_frame` cuts them back into exactly the same windows.
"""
from __future__ import annotations

import hashlib
import ipaddress
from typing import Any

import numpy as np
import pandas as pd

from contracts.records import FLOW_FIELDS
from inference.datasets.lab import CARRIES
from inference.features import (CONTEXT_FEATURES, FLOW_FEATURES, N_FEATURES, RAW_COLUMNS,
                                failed_flags, flow_features, raw_matrix_from_frame)
from inference.history import HISTORY_FEATURES, new_history
from inference.windowing import KeyMode, window_id, window_label, windows_from_frame

WINDOW_COLUMNS = ("window_id", "label", "provenance")
VIEW_COLUMN = "view"
SYNTHETIC_SENSOR = "synthetic"
_SRC_NET = ipaddress.IPv4Network("198.18.0.0/16")
_DST_NET = ipaddress.IPv4Network("198.19.0.0/16")
_EPOCH_MS = 1_800_000_000_000  # synthetic time starts here (2027), clear of real captures
_WINDOW_SPACING_MS = 60_000


def windows_frame(flows: pd.DataFrame, k: int = 8, seconds: float = 10.0, key: KeyMode = "src",
                  min_flows: int = 1, provenance: str = "real",
                  views: Any = None, benign: str = "benign") -> pd.DataFrame:
    """Cut a flow table into windows exactly as the stream does, one row per flow per view.

    `flows` needs FlowRecord columns and, for labelled data, a `label` column (a window's
    label is `inference.windowing.window_label` of its flows). Windows with fewer than
    `min_flows` flows are left out. A lab capture whose flows say which views carry their
    attack (a `carries` column, inference.datasets.lab.CARRIES) is labelled as the shipped
    recipe trains and the open-world judge scores (inference.train.principal_windows).
    Flows keep their columns; row order follows windows; each row carries its window's
    `view` and the host history the stream computed. Rows with different values in a
    `capture` column are windowed as separate captures.
    """
    if "capture" in flows.columns:
        parts = [windows_frame(g.drop(columns=["capture"]), k, seconds, key, min_flows, provenance, views, benign)
                 for _, g in flows.groupby("capture", sort=False)]
        parts = [p for p in parts if len(p)]
        return pd.concat(parts, ignore_index=True) if parts else _empty_like(flows.drop(columns=["capture"]))
    flows = flows.reset_index(drop=True)
    positional = flows.assign(flow_id=np.arange(len(flows)).astype(str))
    has_label = "label" in flows.columns
    if has_label and CARRIES in flows.columns and flows[CARRIES].notna().all():
        from inference.train import principal_windows

        # A lab capture that says which views carry each attack: windows labelled (and the
        # unjudgeable ones left out) as the shipped recipe trains and open-world judges.
        judged = [(w, lab) for w, lab in principal_windows(positional, k, seconds, key, benign, views)
                  if len(w.flow_ids) >= min_flows]
        closed, labels = [w for w, _ in judged], [lab for _, lab in judged]
    else:
        closed = windows_from_frame(positional, k=k, seconds=seconds, key=key,
                                    label_column="label" if has_label else None, views=views)
        closed = [w for w in closed if len(w.flow_ids) >= min_flows]
        labels = [window_label(w.labels) if has_label else "" for w in closed]
    if not closed:
        return _empty_like(flows)
    order = np.concatenate([np.asarray(w.flow_ids, dtype=np.int64) for w in closed])
    lengths = [len(w.flow_ids) for w in closed]
    out = flows.iloc[order].reset_index(drop=True)
    # Ids as the stream gives them: from the key and the first flow's own id.
    first_ids = flows["flow_id"].astype(str).to_numpy()
    ids = [window_id(w.key, first_ids[int(w.flow_ids[0])], w.view) for w in closed]
    out["window_id"] = np.repeat(ids, lengths)
    out["label"] = np.repeat(labels, lengths)
    out["provenance"] = provenance
    out[VIEW_COLUMN] = np.repeat([w.view for w in closed], lengths)
    hist = np.concatenate([w.history for w in closed])
    for j, name in enumerate(HISTORY_FEATURES):
        out[name] = hist[:, j]
    return out


def _empty_like(flows: pd.DataFrame) -> pd.DataFrame:
    cols = list(dict.fromkeys([*flows.columns, *WINDOW_COLUMNS]))
    return pd.DataFrame(columns=cols)


def window_starts(df: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each row: whether it starts a window, the window's ordinal, and its position in it.

    Raises ValueError when a window's rows are not contiguous.
    """
    ids = df["window_id"].astype(str).to_numpy()
    if len(ids) == 0:
        z = np.zeros(0, dtype=np.int64)
        return np.zeros(0, dtype=bool), z, z
    start = np.r_[True, ids[1:] != ids[:-1]]
    ordinal = np.cumsum(start) - 1
    if int(start.sum()) != len(pd.unique(ids)):
        raise ValueError("a window's rows are not contiguous in the frame")
    position = np.arange(len(ids)) - np.flatnonzero(start)[ordinal]
    return start, ordinal, position


def row_features(df: pd.DataFrame) -> np.ndarray:
    """Per-row features [N, N_FEATURES]: flow features, context within the row's window
    and its view, and host history: the same numbers `inference.windowing.Windower`
    computes when it closes a window. History comes from the frame's history columns
    where they are filled; elsewhere each window is taken as its host's whole history.
    """
    start, _, _ = window_starts(df)
    feats = np.zeros((len(df), N_FEATURES), dtype=np.float32)
    if len(df) == 0:
        return feats
    raw = raw_matrix_from_frame(df)
    nf, nc = len(FLOW_FEATURES), len(CONTEXT_FEATURES)
    feats[:, :nf] = flow_features(raw)
    cont = ~start
    ts = df["first_seen_ms"].to_numpy(dtype=np.float64)
    dport = df["dst_port"].to_numpy(dtype=np.float64)
    dst_view = _views(df) == "dst"
    peer = np.where(dst_view, df["src_ip"].astype(str).to_numpy(), df["dst_ip"].astype(str).to_numpy())
    feats[1:, nf] = np.where(cont[1:], np.log1p(np.maximum(np.diff(ts), 0.0)), 0.0)
    feats[1:, nf + 1] = cont[1:] & (dport[1:] != dport[:-1])
    feats[1:, nf + 2] = cont[1:] & (peer[1:] != peer[:-1])
    feats[:, nf + 3] = dst_view
    feats[:, nf + nc:] = _history(df, raw, peer, ts, dport)
    return feats


def _views(df: pd.DataFrame) -> np.ndarray:
    if VIEW_COLUMN not in df.columns:
        return np.full(len(df), "src", dtype=object)
    return df[VIEW_COLUMN].fillna("src").astype(str).to_numpy()


def _history(df: pd.DataFrame, raw: np.ndarray, peer: np.ndarray, ts: np.ndarray,
             dport: np.ndarray) -> np.ndarray:
    """Stored history where every value of a row is there; the window alone elsewhere."""
    have = np.zeros(len(df), dtype=bool)
    out = np.zeros((len(df), len(HISTORY_FEATURES)), dtype=np.float32)
    if set(HISTORY_FEATURES) <= set(df.columns):
        stored = df.loc[:, list(HISTORY_FEATURES)].to_numpy(dtype=np.float64, na_value=np.nan)
        have = ~np.isnan(stored).any(axis=1)
        out[have] = stored[have]
    if not have.all():
        miss = ~have
        own = new_history(max_hosts=max(1, int(miss.sum())), max_pairs=max(1, 2 * int(miss.sum())))
        out[miss] = own.update(df["window_id"].astype(str).to_numpy()[miss].tolist(), peer[miss].tolist(),
                               dport[miss].astype(int).tolist(), ts[miss].tolist(),
                               failed_flags(raw[miss]).tolist(),
                               raw[miss, RAW_COLUMNS.index("bytes")].tolist())
    return out


def window_tensors(df: pd.DataFrame, k: int = 8
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Stack a window frame into x [n, F, K], mask [n, K], labels [n] and provenance [n].

    Matches `inference.windowing.stack_windows`. A window longer than K is an error.
    """
    start, ordinal, position = window_starts(df)
    n = int(start.sum())
    if len(position) and int(position.max()) >= k:
        raise ValueError(f"a window has more than K={k} flows")
    x = np.zeros((n, N_FEATURES, k), dtype=np.float32)
    mask = np.zeros((n, k), dtype=np.float32)
    if n:
        x[ordinal, :, position] = row_features(df)
        mask[ordinal, position] = 1.0
    labels = df["label"].astype(str).to_numpy()[start] if n else np.zeros(0, dtype=object)
    prov = (df["provenance"].astype(str).to_numpy()[start] if "provenance" in df.columns
            else np.full(n, "real", dtype=object))
    return x, mask, labels, prov


def window_summary(x: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Order-free window descriptors for fast classifiers: per-feature mean, std, min, max
    over the window's real positions, plus its flow count ([n, 4F + 1])."""
    m = mask.astype(bool)[:, None, :]
    cnt = np.maximum(mask.sum(axis=1), 1.0)[:, None]
    mean = np.where(m, x, 0.0).sum(axis=2) / cnt
    var = np.where(m, (x - mean[:, :, None]) ** 2, 0.0).sum(axis=2) / cnt
    lo = np.where(m, x, np.inf).min(axis=2)
    hi = np.where(m, x, -np.inf).max(axis=2)
    empty = mask.sum(axis=1) == 0
    lo[empty], hi[empty] = 0.0, 0.0
    return np.concatenate([mean, np.sqrt(var), lo, hi, mask.sum(axis=1, keepdims=True)],
                          axis=1).astype(np.float32)


def window_lengths(df: pd.DataFrame) -> np.ndarray:
    """Number of flows in each window, in frame order."""
    start, ordinal, _ = window_starts(df)
    return np.bincount(ordinal, minlength=int(start.sum()))


def gaps_and_dst_changes(df: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Per row: ms since the previous flow of its window started (0 for the first), and
    whether its destination address differs from the previous flow's (False for the first)."""
    start, _, _ = window_starts(df)
    ts = df["first_seen_ms"].to_numpy(dtype=np.float64)
    dst = df["dst_ip"].astype(str).to_numpy()
    gap = np.zeros(len(df))
    new_dst = np.zeros(len(df), dtype=bool)
    if len(df) > 1:
        gap[1:] = np.where(start[1:], 0.0, np.maximum(np.diff(ts), 0.0))
        new_dst[1:] = ~start[1:] & (dst[1:] != dst[:-1])
    return gap, new_dst


class SyntheticIdentity:
    """Hands out addresses, flow ids, window ids and timestamps for synthetic windows.

    Each window gets its own source address, so windowing by source cannot merge two
    synthetic windows; `namespace` keeps separate generators apart. Deterministic: the
    same namespace and call order give the same identities.
    """

    def __init__(self, namespace: str = "synthetic") -> None:
        self.namespace = namespace
        digest = hashlib.blake2b(namespace.encode(), digest_size=4).digest()
        self._offset = int.from_bytes(digest, "big")
        self._next = 0

    def _address(self, net: ipaddress.IPv4Network, n: int) -> str:
        host = 1 + (self._offset + n) % (net.num_addresses - 2)
        return str(net.network_address + host)

    def assign(self, rows: pd.DataFrame, window_index: np.ndarray, gap_ms: np.ndarray,
               new_dst: np.ndarray, label: str, provenance: str,
               seconds: float = 10.0) -> pd.DataFrame:
        """Give generated numeric rows identities and time; returns a window frame.

        `window_index` groups rows into windows (contiguous runs); `gap_ms` is each flow's
        start after the previous flow's start; `new_dst` moves it to a new destination.
        Gaps are scaled down where a window would outlast `seconds`.
        """
        out = rows.reset_index(drop=True).copy()
        w = np.asarray(window_index)
        start = np.r_[True, w[1:] != w[:-1]] if len(w) else np.zeros(0, dtype=bool)
        ordinal = np.cumsum(start) - 1
        pos = np.arange(len(w)) - np.flatnonzero(start)[ordinal] if len(w) else ordinal
        ids = self._next + ordinal
        self._next += int(start.sum())
        gap = np.where(start, 0.0, np.maximum(np.nan_to_num(np.asarray(gap_ms, float)), 0.0))
        offset = _bounded_offsets(gap, ordinal, seconds * 1000.0 - 1.0)
        spacing = max(_WINDOW_SPACING_MS, int(seconds * 1000) + 1000)
        base = _EPOCH_MS + ids.astype(np.int64) * spacing
        first = base + offset.astype(np.int64)
        hop = np.cumsum(np.where(start, 0, np.asarray(new_dst, bool)).astype(np.int64))
        hop -= np.repeat(hop[start], np.bincount(ordinal))
        tag = f"{provenance.replace(':', '-')}-{self.namespace}"
        out["flow_id"] = [f"{tag}-{i}-{p}" for i, p in zip(ids, pos)]
        out["src_ip"] = [self._address(_SRC_NET, int(i)) for i in ids]
        out["dst_ip"] = [self._address(_DST_NET, int(i) * 8 + int(h)) for i, h in zip(ids, hop)]
        out["first_seen_ms"] = first
        dur = np.ceil(np.clip(np.nan_to_num(out["duration_ms"].to_numpy(dtype=np.float64)), 0.0, 1e13))
        out["last_seen_ms"] = first + dur.astype(np.int64)
        out["sensor"] = SYNTHETIC_SENSOR
        out["ip_version"] = 4
        for col in ("application_name", "requested_server_name", "user_agent"):
            out[col] = ""
        starts = np.flatnonzero(start)
        wid = [window_id(out["src_ip"].iat[s], out["flow_id"].iat[s]) for s in starts]
        out["window_id"] = np.repeat(wid, np.bincount(ordinal)) if len(w) else []
        out["label"] = label
        out["provenance"] = provenance
        return out


def _bounded_offsets(gap: np.ndarray, ordinal: np.ndarray, horizon_ms: float) -> np.ndarray:
    """Cumulative offsets within each window, scaled so that none exceeds the horizon."""
    offs = pd.Series(gap).groupby(ordinal).cumsum().to_numpy()
    span = pd.Series(offs).groupby(ordinal).transform("max").to_numpy()
    scale = np.where(span > horizon_ms, horizon_ms / np.maximum(span, 1.0), 1.0)
    return np.floor(offs * scale)


def records(df: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows as plain dicts of JSON types (NaN dropped), ready for FlowRecord validation."""
    cols = [c for c in df.columns if c in FLOW_FIELDS]
    # to_dict boxes numpy scalars to Python ones; NaN (and None) are the missing values.
    return [{k: _plain(v) for k, v in row.items() if v is not None and v == v}
            for row in df[cols].to_dict(orient="records")]


def _plain(v: Any) -> Any:
    if isinstance(v, np.generic):
        return v.item()
    return v
