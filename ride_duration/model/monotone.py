"""The monotone ride-duration model: minutes never decrease with ``trip_distance``.

For a ride from zone ``p`` to zone ``d`` over ``x`` miles (``0 < x``, clipped at ``max_miles``)::

    minutes = a[p] + a[d] + a[p_d] + min(exp(l[p] + l[d] + l[p_d]), max_scale) * g(x)

``g`` is one non-decreasing piecewise-linear curve (``np.interp`` over ``knots_x``/``knots_y``),
learned by isotonic regression; ``a`` are additive zone effects and ``l`` log-scales (how
slow a zone or pair is), each shrunk towards 0 (ridge), so a pair never seen in training gets
its two zones' effects. Every zone pair's curve is therefore a positive multiple of ``g``
plus a constant: non-decreasing by construction, and ``max_scale`` is set so that no
0.5-mile step of any curve exceeds ``MAX_STEP_MINUTES``. Answers are floored at
``MIN_MINUTES`` (a zone pair with a large negative effect would otherwise go below zero for
the shortest distances; a floor keeps every curve non-decreasing). A distance of 0 (not recorded)
has its own additive model ``u`` fitted on the training rides of distance 0.

The regressor reads the ``DictVectorizer`` matrix of feature step ``monotone-v3``
(``PU_DO=…``, ``PU=…``, ``DO=…`` one-hots and ``trip_distance``). Its state is numpy arrays,
floats and a tuple of strings (no code objects), so it can be serialized without pickle.
It is a scikit-learn estimator (``BaseEstimator``, so a ``Pipeline`` can hold it); this module
imports numpy and ``sklearn.base`` (scipy and ``sklearn.isotonic`` inside the methods). The
logged MLflow model carries a copy of it.
"""

from __future__ import annotations

import bisect
import math
import typing as t
from operator import itemgetter

import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin

from ..features import (
    CATEGORICAL,
    DROPOFF,
    MAX_PLAUSIBLE_MILES,
    NUMERICAL,
    PICKUP,
    distance_warning,
    distance_warnings,
    far_bound,
    plausible,
)

MAX_STEP_MINUTES = 3.0
"""No zone pair's curve may rise more than this between two distances ``STEP_MILES`` apart."""
STEP_MILES = 0.5
STEP_MARGIN = 1e-6
"""``max_scale`` aims at ``MAX_STEP_MINUTES * (1 - STEP_MARGIN)``, so rounding never tips a step over."""
MIN_MINUTES = 1.0
"""No answer is shorter than the shortest ride training keeps (a floor keeps the curves monotone)."""
GROUPS = (PICKUP, DROPOFF, CATEGORICAL)
MAX_DENSE_CELLS = 4_000_000
"""Largest ``[PU, DO]`` table the batch path builds (TLC zones 1–265: 71,824 cells, 2.3 MB for four)."""


class MonotoneDuration(RegressorMixin, BaseEstimator):
    """Regressor on a ``monotone-v3`` ``DictVectorizer`` matrix (see the module docstring).

    Hyper-parameters: ridge penalties of the additive effects (``offset_penalty``) and the
    log-scales (``scale_penalty``), per group ``PU``, ``DO``, ``PU_DO``; ``train_max_mph``
    (training also leaves out plausible rides faster than this: timing errors that pull the
    curves down), ``iterations`` of backfitting, ``knot_miles`` (spacing of ``g``'s knots).
    """

    def __init__(self, feature_names: t.Sequence[str] = (), max_miles: float = MAX_PLAUSIBLE_MILES,
                 offset_penalty: tuple[float, float, float] = (10.0, 10.0, 10.0),
                 scale_penalty: tuple[float, float, float] = (10.0, 10.0, 30.0),
                 train_max_mph: float = 35.0, iterations: int = 20, knot_miles: float = 0.1,
                 smooth_fraction: float = 0.2, separator: str = "=") -> None:
        self.feature_names = tuple(feature_names)
        self.max_miles = float(max_miles)
        self.offset_penalty = tuple(offset_penalty)
        self.scale_penalty = tuple(scale_penalty)
        self.train_max_mph = float(train_max_mph)
        self.iterations = int(iterations)
        self.knot_miles = float(knot_miles)
        self.smooth_fraction = float(smooth_fraction)
        self.separator = separator

    def __sklearn_is_fitted__(self) -> bool:
        return hasattr(self, "knots_x_")

    # ---- columns --------------------------------------------------------------------------
    def group_columns(self) -> dict[str, np.ndarray]:
        """Column indices of each one-hot group (``PU``, ``DO``, ``PU_DO``)."""
        out = {}
        for group in GROUPS:
            prefix = group + self.separator
            out[group] = np.asarray([i for i, n in enumerate(self.feature_names) if n.startswith(prefix)], dtype=int)
        return out

    def distance_column(self) -> int:
        try:
            return self.feature_names.index(NUMERICAL)
        except ValueError:
            raise ValueError(f"the vectorizer has no {NUMERICAL} column") from None

    # ---- fitting --------------------------------------------------------------------------
    def fit(self, x: t.Any, y: t.Any) -> MonotoneDuration:
        """Fit on a ``monotone-v3`` matrix ``x`` and minutes ``y`` (all 1–60 minute rides).

        Rides with distance 0 train the unknown-distance model; plausible rides
        (:func:`ride_duration.features.plausible`) under ``train_max_mph`` train the curves;
        the rest are left out.
        """
        from scipy import sparse
        from sklearn.isotonic import IsotonicRegression

        x = sparse.csr_matrix(x)
        y = np.asarray(y, dtype=float)
        n_features = x.shape[1]
        di = self.distance_column()
        dist = x[:, di].toarray().ravel()
        columns = self.group_columns()
        rows = {g: hot_column(x, cols) for g, cols in columns.items()}
        speed_ok = dist / np.maximum(y / 60.0, 1e-9) < self.train_max_mph
        zoned = np.logical_and.reduce([rows[g] >= 0 for g in GROUPS])
        main = plausible(dist, y) & speed_ok & zoned
        zero = (dist <= 0) & zoned

        # curves: backfitting of g (isotonic) and the per-group offsets and log-scales
        xm, ym = np.minimum(dist[main], self.max_miles), y[main]
        idx = [rows[g][main] for g in GROUPS]
        a_cols = [np.zeros(n_features) for _ in GROUPS]
        l_cols = [np.zeros(n_features) for _ in GROUPS]
        iso = IsotonicRegression(out_of_bounds="clip", y_min=0.0, increasing=True)
        knots_x = np.unique(np.concatenate([np.arange(0.0, self.max_miles, self.knot_miles), [self.max_miles]]))
        knots_y, max_scale = np.zeros_like(knots_x), 3.0
        gx = np.zeros_like(xm)

        def scales() -> np.ndarray:
            return np.minimum(np.exp(sum(lc[i] for lc, i in zip(l_cols, idx, strict=True))), max_scale)

        for _ in range(self.iterations):
            a = sum(ac[i] for ac, i in zip(a_cols, idx, strict=True))
            s = scales()
            iso.fit(xm, (ym - a) / s, sample_weight=s * s)
            knots_y = smooth(knots_x, iso.predict(knots_x), self.smooth_fraction)
            max_scale = MAX_STEP_MINUTES * (1 - STEP_MARGIN) / max(max_window_rise(knots_x, knots_y, STEP_MILES), 1e-9)
            gx = np.interp(xm, knots_x, knots_y)
            for k in range(len(GROUPS)):
                a = sum(ac[i] for ac, i in zip(a_cols, idx, strict=True))
                s = scales()
                r = ym - a - s * gx
                a_cols[k] += np.bincount(idx[k], r, n_features) / (
                    np.bincount(idx[k], None, n_features) + self.offset_penalty[k])
                a = sum(ac[i] for ac, i in zip(a_cols, idx, strict=True))
                r, j = ym - a - s * gx, np.where(s < max_scale, s * gx, 0.0)
                l_cols[k] += (np.bincount(idx[k], r * j, n_features) - self.scale_penalty[k] * l_cols[k]) / (
                    np.bincount(idx[k], j * j, n_features) + self.scale_penalty[k])
                np.clip(l_cols[k], -2.0, 2.0, out=l_cols[k])
        self.knots_x_, self.knots_y_, self.max_scale_ = knots_x, knots_y, float(max_scale)
        self.offset_ = sum(a_cols)
        self.log_scale_ = sum(l_cols)
        self.offset_[di] = self.log_scale_[di] = 0.0

        # distance 0: additive effects only (minutes of a ride of unknown length)
        yz = y[zero]
        self.unknown_intercept_ = float(yz.mean()) if len(yz) else float(y.mean())
        u_cols = [np.zeros(n_features) for _ in GROUPS]
        zidx = [rows[g][zero] for g in GROUPS]
        for _ in range(self.iterations if len(yz) else 0):
            for k in range(len(GROUPS)):
                r = yz - self.unknown_intercept_ - sum(uc[i] for uc, i in zip(u_cols, zidx, strict=True))
                u_cols[k] += np.bincount(zidx[k], r, n_features) / (
                    np.bincount(zidx[k], None, n_features) + self.offset_penalty[k])
        self.unknown_offset_ = sum(u_cols)
        self.unknown_offset_[di] = 0.0

        # "far beyond what this pair has seen": per PU_DO column, from the plausible rides
        longest = np.zeros(n_features)
        seen = plausible(dist, y) & (rows[CATEGORICAL] >= 0)
        np.maximum.at(longest, rows[CATEGORICAL][seen], dist[seen])
        self.far_miles_ = np.full(n_features, np.inf)
        has = longest > 0
        self.far_miles_[has] = far_bound(longest[has])
        self.n_train_rides_ = {"curves": int(main.sum()), "distance_zero": int(zero.sum()), "all": len(y)}
        return self

    # ---- prediction -----------------------------------------------------------------------
    def predict(self, x: t.Any) -> np.ndarray:
        """Minutes for each row of a ``monotone-v3`` matrix.

        :raises ValueError: NaN or infinite values, or another number of columns (as scikit-learn's
            regressors do, so ``mlflow models serve`` refuses such a row instead of answering NaN).
        """
        from sklearn.utils.validation import check_array

        x = check_array(x, accept_sparse="csr")
        if x.shape[1] != len(self.offset_):
            raise ValueError(f"X has {x.shape[1]} features, but MonotoneDuration expects {len(self.offset_)}")
        dist = x[:, self.distance_column()].toarray().ravel()
        scale = np.minimum(np.exp(x @ self.log_scale_), self.max_scale_)
        known = x @ self.offset_ + scale * np.interp(np.minimum(dist, self.max_miles), self.knots_x_, self.knots_y_)
        unknown = x @ self.unknown_offset_ + self.unknown_intercept_
        return np.maximum(np.where(dist > 0, known, unknown), MIN_MINUTES)

    def summary(self) -> dict[str, t.Any]:
        """What metadata records about the fit."""
        return {"knots": len(self.knots_x_), "max_scale": float(self.max_scale_),
                "max_step_minutes": MAX_STEP_MINUTES, "step_miles": STEP_MILES,
                "train_rides": dict(self.n_train_rides_)}


def hot_column(x: t.Any, cols: np.ndarray) -> np.ndarray:
    """Per row, the index (into the full matrix) of its one hot column among ``cols``, or -1."""
    sub = x[:, cols].tocsr()
    out = np.full(x.shape[0], -1, dtype=np.int64)
    has = np.diff(sub.indptr) > 0
    out[has] = cols[sub.indices[sub.indptr[:-1][has]]]
    return out


def smooth(knots_x: np.ndarray, values: np.ndarray, fraction: float) -> np.ndarray:
    """Moving average of a non-decreasing curve over ``[x - w, x + w]``, ``w = max(0.25, fraction * x)``
    (clipped to the knots' range): both window ends grow with ``x``, so the average stays
    non-decreasing, and the sparse tail's isotonic jumps become ramps."""
    values = np.maximum.accumulate(np.asarray(values, dtype=float))
    if fraction <= 0:
        return values
    width = np.maximum(0.25, fraction * knots_x)
    lo = np.maximum(knots_x - width, knots_x[0])
    hi = np.minimum(knots_x + width, knots_x[-1])
    area = np.concatenate([[0.0], np.cumsum(np.diff(knots_x) * (values[1:] + values[:-1]) / 2)])

    def integral(x: np.ndarray) -> np.ndarray:  # exact for the piecewise-linear curve up to O(knot spacing)
        return np.interp(x, knots_x, area)

    out = (integral(hi) - integral(lo)) / np.maximum(hi - lo, 1e-12)
    return np.maximum.accumulate(out)


def max_window_rise(knots_x: np.ndarray, knots_y: np.ndarray, width: float) -> float:
    """``max over x of g(x + width) - g(x)`` for the non-decreasing piecewise-linear ``g`` (exact:
    the maximum has a window end on a knot)."""
    starts = np.concatenate([knots_x, knots_x - width])
    starts = starts[(starts >= knots_x[0]) & (starts + width <= knots_x[-1])]
    rise = np.interp(starts + width, knots_x, knots_y) - np.interp(starts, knots_x, knots_y)
    return float(rise.max()) if len(rise) else 0.0


class CompiledMonotone:
    """The fast path of a :class:`MonotoneDuration`: dictionaries per zone pair and zone.

    One ride is a dictionary lookup, a bisection over the knots and a multiply-add (pure
    Python, no numpy call); a batch is one index into dense ``[PU, DO]`` tables and ``np.interp``.
    It also says which rides get a plausibility warning (the zone pairs' bounds travel with it).
    """

    def __init__(self, feature_names: t.Sequence[str], model: MonotoneDuration, separator: str = "=") -> None:
        names = list(feature_names)
        self.max_miles = model.max_miles
        self.max_scale = float(model.max_scale_)
        self.knots_x = [float(v) for v in model.knots_x_]
        self.knots_y = [float(v) for v in model.knots_y_]
        self._kx, self._ky = np.asarray(self.knots_x), np.asarray(self.knots_y)
        zones: dict[str, dict[int, tuple[float, float, float]]] = {PICKUP: {}, DROPOFF: {}}
        pair_cols: dict[tuple[int, int], int] = {}
        off, logs, unk = model.offset_.tolist(), model.log_scale_.tolist(), model.unknown_offset_.tolist()
        for i, name in enumerate(names):
            group, sep, value = name.partition(separator)
            if not sep:
                continue
            if group in zones and value.isdigit() and str(int(value)) == value:
                zones[group][int(value)] = (off[i], logs[i], unk[i])
            elif group == CATEGORICAL:
                pu, s2, do = value.partition("_")
                if s2 and pu.isdigit() and do.isdigit() and str(int(pu)) == pu and str(int(do)) == do:
                    pair_cols[(int(pu), int(do))] = i
        self.pickup, self.dropoff = zones[PICKUP], zones[DROPOFF]
        self.unknown_intercept = float(model.unknown_intercept_)
        far = model.far_miles_.tolist()
        # per known pair: (offset, scale, unknown-distance minutes, far bound), all zone effects folded in
        self.pairs: dict[tuple[int, int], tuple[float, float, float, float]] = {}
        for (pu, do), i in pair_cols.items():
            a, log_scale, u = self.zone_parts(pu, do)
            self.pairs[(pu, do)] = (a + off[i], min(math.exp(log_scale + logs[i]), self.max_scale),
                                    u + unk[i], far[i])
        self.min_far = min((v[3] for v in self.pairs.values()), default=math.inf)
        self.tables = self.pair_tables() if self.pickup or self.dropoff else None

    def pair_tables(self) -> tuple[np.ndarray, ...] | None:
        """Dense ``[PU, DO]`` tables of offset, scale, unknown-distance minutes and far bound for every
        zone combination (trained pairs and, for the rest, their zones' effects). The last row and
        column stand for every zone ID beyond the table. None when the zone IDs are too large for it."""
        n_pu = max(max(self.pickup, default=0), max((p for p, _ in self.pairs), default=0)) + 2
        n_do = max(max(self.dropoff, default=0), max((d for _, d in self.pairs), default=0)) + 2
        if n_pu * n_do > MAX_DENSE_CELLS:
            return None
        pu, do = dense(self.pickup, n_pu), dense(self.dropoff, n_do)
        offset = pu[:, 0, None] + do[None, :, 0]
        scale = np.minimum(np.exp(pu[:, 1, None] + do[None, :, 1]), self.max_scale)
        unknown = self.unknown_intercept + pu[:, 2, None] + do[None, :, 2]
        far = np.full((n_pu, n_do), np.inf)
        if self.pairs:
            rows = np.asarray(list(self.pairs), dtype=np.int64)
            values = np.asarray(list(self.pairs.values()), dtype=float)
            for table, column in zip((offset, scale, unknown, far), values.T, strict=True):
                table[rows[:, 0], rows[:, 1]] = column
        return tuple(np.ascontiguousarray(x).ravel() for x in (offset, scale, unknown, far)) + (n_pu, n_do)

    def zone_parts(self, pu: int, do: int) -> tuple[float, float, float]:
        """Offset, log-scale and unknown-distance offset of a pair from its two zones alone."""
        pa, pl, pz = self.pickup.get(pu, (0.0, 0.0, 0.0))
        da, dl, dz = self.dropoff.get(do, (0.0, 0.0, 0.0))
        return pa + da, pl + dl, self.unknown_intercept + pz + dz

    def curve(self, x: float) -> float:
        kx, ky = self.knots_x, self.knots_y
        if x >= kx[-1]:
            return ky[-1]
        if x <= kx[0]:
            return ky[0]
        j = bisect.bisect_right(kx, x)
        x0, x1 = kx[j - 1], kx[j]
        return ky[j - 1] + (ky[j] - ky[j - 1]) * ((x - x0) / (x1 - x0))

    def lookup(self, pu: int, do: int) -> tuple[float, float, float, float]:
        hit = self.pairs.get((pu, do))
        if hit is not None:
            return hit
        a, log_scale, u = self.zone_parts(pu, do)
        return a, min(math.exp(log_scale), self.max_scale), u, math.inf

    def predict_one(self, ride: t.Mapping[str, t.Any]) -> float:
        a, s, u, _ = self.lookup(int(ride["PULocationID"]), int(ride["DOLocationID"]))
        d = float(ride["trip_distance"])
        if d <= 0:
            return max(u, MIN_MINUTES)
        return max(a + s * self.curve(min(d, self.max_miles)), MIN_MINUTES)

    def cells(self, rides: t.Sequence[t.Mapping[str, t.Any]]) -> tuple[np.ndarray, np.ndarray] | None:
        """``(cell of each ride in the dense tables, distance)``, or None when the per-ride path must answer
        (no tables, or a zone that is not a non-negative integer)."""
        if self.tables is None:
            return None
        n = len(rides)
        try:
            pu = np.fromiter(map(itemgetter("PULocationID"), rides), float, n)
            do = np.fromiter(map(itemgetter("DOLocationID"), rides), float, n)
            dist = np.fromiter(map(itemgetter("trip_distance"), rides), float, n)
        except (TypeError, ValueError, OverflowError):
            return None
        n_pu, n_do = self.tables[4], self.tables[5]
        if not (pu.min() >= 0 and do.min() >= 0 and (np.floor(pu) == pu).all() and (np.floor(do) == do).all()):
            return None
        cell = np.minimum(pu, n_pu - 1).astype(np.int64) * n_do + np.minimum(do, n_do - 1).astype(np.int64)
        return cell, dist

    def predict(self, rides: t.Sequence[t.Mapping[str, t.Any]]) -> np.ndarray:
        found = self.cells(rides)
        if found is None:
            return np.asarray([self.predict_one(r) for r in rides], dtype=float)
        return self.predict_cells(*found)

    def predict_with_warnings(self, rides: t.Sequence[t.Mapping[str, t.Any]]
                              ) -> tuple[np.ndarray, list[tuple[int, str]]]:
        """:meth:`predict` and :meth:`warnings` of a batch with one set of lookups."""
        found = self.cells(rides)
        if found is None:
            return np.asarray([self.predict_one(r) for r in rides], dtype=float), self.warnings(rides)
        cell, dist = found
        return self.predict_cells(cell, dist), distance_warnings(dist, self.tables[3][cell])  # type: ignore[index]

    def predict_cells(self, cell: np.ndarray, dist: np.ndarray) -> np.ndarray:
        offset, scale, unknown = self.tables[0], self.tables[1], self.tables[2]  # type: ignore[index]
        out = offset[cell] + scale[cell] * np.interp(np.minimum(dist, self.max_miles), self._kx, self._ky)
        zero = dist <= 0
        if zero.any():
            out[zero] = unknown[cell[zero]]
        return np.maximum(out, MIN_MINUTES, out=out)

    def far(self, ride: t.Mapping[str, t.Any]) -> float:
        hit = self.pairs.get((int(ride["PULocationID"]), int(ride["DOLocationID"])))
        return math.inf if hit is None else hit[3]

    def warnings(self, rides: t.Sequence[t.Mapping[str, t.Any]]) -> list[tuple[int, str]]:
        """``(index, code)`` of the rides with an implausible distance (see ``features.distance_warning``).

        Only a ride longer than the smallest zone-pair bound needs its pair's bound looked up.
        """
        out = []
        min_far = self.min_far
        if len(rides) < 64:
            for i, ride in enumerate(rides):
                d = ride["trip_distance"]
                if 0 < d <= min_far:
                    continue
                code = distance_warning(float(d), self.far(ride))
                if code is not None:
                    out.append((i, code))
            return out
        dist = np.fromiter(map(itemgetter("trip_distance"), rides), float, len(rides))
        for i in np.flatnonzero((dist <= 0) | (dist > min_far)).tolist():
            code = distance_warning(float(dist[i]), self.far(rides[i]))
            if code is not None:
                out.append((i, code))
        return out


def dense(zones: t.Mapping[int, tuple[float, float, float]], size: int) -> np.ndarray:
    """``zones`` as a ``size``-row table indexed by zone ID: ``(offset, log-scale, unknown offset)``,
    zero rows (no effect) for the IDs it lacks."""
    table = np.zeros((size, 3))
    for zone, row in zones.items():
        table[zone] = row
    return table


def compile_monotone(dv: t.Any, regressor: t.Any) -> CompiledMonotone | None:
    """The fast form of a fitted ``(DictVectorizer, MonotoneDuration)`` pair, or None for other models."""
    if not isinstance(regressor, MonotoneDuration) or not regressor.__sklearn_is_fitted__():
        return None
    names = list(getattr(dv, "feature_names_", []))
    if tuple(names) != regressor.feature_names:
        return None
    return CompiledMonotone(names, regressor, getattr(dv, "separator", "="))
