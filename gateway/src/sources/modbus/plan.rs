//! The read plan: which requests cover which points of one device.
//!
//! Owns the coalescing of points into as few requests as possible, and the re-planning of a
//! request that the device rejects. It does not send anything ([`super::poller`]) or decode
//! ([`super::decode`]).
//!
//! Rules:
//! - Points of one function (register table) are merged while the merged request stays within
//!   the protocol limit ([`Function::max_per_read`]: 125 registers, 2000 bits) and the unused
//!   registers between two points do not exceed `max_gap`.
//! - A point with a device sample time (`time_address`) is planned as the hull of its value and
//!   its time registers, so value and time always come from one request, hence one sample.
//! - Many devices refuse a read that covers an unmapped register with exception 02 (illegal data
//!   address, Modbus application protocol V1.1b3 §7). No request spans a *hole*: registers
//!   declared in the profile (`holes`) or learned. When a request is refused that way,
//!   [`ReadPlan::split`] looks at the unused gaps inside it: a single gap not read before is the
//!   hole and is learned; with several, the request is split at the largest (bisection; reading
//!   the halves shows which gaps are readable, and [`ReadPlan::rebuild_if_replanned`] learns the
//!   one left); with none, a point's own registers are refused and the points are halved down to
//!   the refused point, which is then read alone (and flagged) while the others stay coalesced.
//!   A refused range is never requested again inside a larger one, so learning ends even when
//!   the refusal has another cause (a device with a smaller request limit).
//! - After a poll that re-planned, the whole plan is rebuilt with what was learned, so the
//!   requests per poll are the fewest the map allows around its holes.
//! - A point whose value+time hull spans a hole is read in two parts ([`Part`]): its value with
//!   the other values, and its time in a time request that serves every point sharing that
//!   time register (read once per group). Those two reads can straddle a sample tick, in which
//!   case the reading carries the next sample's time, which is why the hull is preferred.

use std::collections::BTreeSet;
use std::fmt;

use super::config::{Function, Hole, Point};

/// Which registers of a point a request reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// The value and, if the point has one, its sample time (the normal case).
    Whole,
    /// Only the value; the time comes from a [`Part::Time`] request of the same poll.
    Value,
    /// Only the sample time.
    Time,
}

/// One read request and the points it serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadRequest {
    /// Register table (function code).
    pub function: Function,
    /// First address read.
    pub start: u16,
    /// Number of registers or bits read.
    pub count: u16,
    /// Indices into the device's point list, in address order.
    pub points: Vec<usize>,
    /// What of each point is read (one point per request unless `Whole`).
    pub part: Part,
}

impl fmt::Display for ReadRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let last = u32::from(self.start) + u32::from(self.count) - 1;
        write!(
            f,
            "{} {}..={} ({} {})",
            self.function,
            self.start,
            last,
            self.count,
            unit_word(self)
        )?;
        match self.part {
            Part::Whole => Ok(()),
            Part::Value => write!(f, ", values only"),
            Part::Time => write!(f, ", sample time only"),
        }
    }
}

fn unit_word(r: &ReadRequest) -> &'static str {
    match (r.function.is_bits(), r.count == 1) {
        (true, true) => "bit",
        (true, false) => "bits",
        (false, true) => "register",
        (false, false) => "registers",
    }
}

/// The span `[start, end)` a point needs read in one request: its value, plus its sample time.
///
/// Returns `None` when the span does not fit in one request (a config error reported by
/// validation, see [`point_span_error`]).
#[must_use]
pub fn point_span(point: &Point) -> Option<(u32, u32)> {
    let mut start = u32::from(point.address);
    let mut end = start + u32::from(point.width());
    if let Some((t, _)) = point.time {
        start = start.min(u32::from(t));
        end = end.max(u32::from(t) + 2);
    }
    (end <= 0x1_0000 && end - start <= u32::from(point.function.max_per_read()))
        .then_some((start, end))
}

/// Explain why a point's span cannot be read in one request, for config validation.
#[must_use]
pub fn point_span_error(point: &Point) -> Option<String> {
    if point_span(point).is_some() {
        return None;
    }
    let end = u32::from(point.address) + u32::from(point.width());
    if end > 0x1_0000 {
        return Some(format!(
            "address {} with width {} runs past register 65535",
            point.address,
            point.width()
        ));
    }
    Some(format!(
        "time_address is too far from address {}: value and sample time must fit in one request of at most {} registers",
        point.address,
        point.function.max_per_read()
    ))
}

/// One register (or bit) of one table, widened so that the end of the table (65536) fits.
type Reg = (Function, u32);

/// The requests for one device, and what the device taught us about its register map.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ReadPlan {
    /// Requests in function and address order.
    pub requests: Vec<ReadRequest>,
    /// Unused registers a coalesced read may span.
    max_gap: u16,
    /// Registers no request may span: declared in the profile, or learned from exception 02.
    holes: BTreeSet<Reg>,
    /// Registers read in an accepted request: a gap made of these is not a hole.
    readable: BTreeSet<Reg>,
    /// Ranges `[start, end)` the device refused with exception 02: no request may contain one
    /// again (whatever the reason for the refusal, a larger read is refused too), which makes
    /// learning converge even when the refusal is not a hole.
    refused: Vec<(Function, u32, u32)>,
    /// Points refused on their own: planned alone, never coalesced.
    refused_points: BTreeSet<usize>,
    /// Set when a request was re-planned; the whole plan is rebuilt after the poll.
    dirty: bool,
}

/// How a point enters the coalescing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    /// No sample time: fits a `Whole` or a `Value` request.
    Timeless,
    /// Value and sample time in one span.
    Whole,
    /// Value only (its time is in a `Time` item).
    Value,
    /// Sample time only.
    Time,
}

impl ReadPlan {
    /// Coalesce `points` into requests. Points whose span is invalid (see [`point_span`]) are
    /// left out; validation rejects such configs before a plan is built.
    #[must_use]
    pub fn new(points: &[Point], max_gap: u16) -> Self {
        Self::with_holes(points, max_gap, &[])
    }

    /// Like [`ReadPlan::new`], never spanning the registers of `holes` (declared in the
    /// profile): a point whose value and sample time straddle a hole is read in two parts.
    #[must_use]
    pub fn with_holes(points: &[Point], max_gap: u16, holes: &[Hole]) -> Self {
        let mut plan = Self {
            max_gap,
            ..Self::default()
        };
        for h in holes {
            for r in u32::from(h.first)..=u32::from(h.last) {
                plan.holes.insert((h.function, r));
            }
        }
        let all: Vec<usize> = (0..points.len()).collect();
        plan.requests = plan.build(points, &all, &plan.holes);
        plan
    }

    /// The registers learned or declared as holes, per table, as inclusive ranges.
    #[must_use]
    pub fn holes(&self) -> Vec<Hole> {
        let mut out: Vec<Hole> = Vec::new();
        for &(function, r) in &self.holes {
            let r = u16::try_from(r).unwrap_or(u16::MAX);
            match out.last_mut() {
                Some(h) if h.function == function && u32::from(h.last) + 1 == u32::from(r) => {
                    h.last = r;
                }
                _ => out.push(Hole {
                    function,
                    first: r,
                    last: r,
                }),
            }
        }
        out
    }

    /// Record that `req` was answered: the gaps it spans are not holes. Only kept once the
    /// device has refused something (before that there is nothing to learn, and a poll should
    /// not pay for bookkeeping).
    pub fn mark_read(&mut self, req: &ReadRequest) {
        if self.refused.is_empty() {
            return;
        }
        let start = u32::from(req.start);
        for r in start..start + u32::from(req.count) {
            self.readable.insert((req.function, r));
        }
    }

    /// After a poll in which requests were re-planned, plan the whole device again with what
    /// was learned, so the requests around a hole are coalesced as far as the map allows.
    /// Returns true when it rebuilt.
    pub fn rebuild_if_replanned(&mut self, points: &[Point]) -> bool {
        if !std::mem::take(&mut self.dirty) {
            return false;
        }
        self.learn_from_refusals(points);
        let all: Vec<usize> = (0..points.len()).collect();
        self.requests = self.build(points, &all, &self.holes);
        true
    }

    /// Re-plan request `index` after the device refused it with exception 02 (illegal data
    /// address, Modbus application protocol V1.1b3 §7). Returns how many requests replaced it,
    /// or 0 when it cannot be split further (the point itself, or a shared time register, is
    /// refused).
    ///
    /// The unused registers inside the request form gaps. If exactly one gap has not been read
    /// before, it is the hole: it is learned and the request's points are planned around it.
    /// If several are unknown, the request is split at the largest (bisection: each half is
    /// read, which tells which gaps are readable). If none, a point's own registers are
    /// refused: the points are split in two halves, down to one point, whose value+time hull
    /// is split into a value and a time read, and a single value refused is the point's fault.
    pub fn split(&mut self, index: usize, points: &[Point]) -> usize {
        let Some(old) = self.requests.get(index).cloned() else {
            return 0;
        };
        let (start, end) = (
            u32::from(old.start),
            u32::from(old.start) + u32::from(old.count),
        );
        self.refused.push((old.function, start, end));
        self.dirty = true;
        let mut occupied = BTreeSet::new();
        for &i in &old.points {
            let Some(p) = points.get(i) else { continue };
            for r in registers_of(p, old.part) {
                occupied.insert(r);
            }
        }
        let mut gaps: Vec<(u32, u32)> = Vec::new();
        for r in start..end {
            if occupied.contains(&r) {
                continue;
            }
            match gaps.last_mut() {
                Some(g) if g.1 == r => g.1 = r + 1,
                _ => gaps.push((r, r + 1)),
            }
        }
        let unknown: Vec<(u32, u32)> = gaps
            .into_iter()
            .filter(|&(a, b)| (a..b).any(|r| !self.readable.contains(&(old.function, r))))
            .collect();
        let replacement: Vec<ReadRequest> = match unknown.as_slice() {
            [(a, b)] => {
                for r in *a..*b {
                    self.holes.insert((old.function, r));
                }
                self.build(points, &old.points, &self.holes)
            }
            [_, _, ..] => {
                let (a, b) = unknown
                    .iter()
                    .copied()
                    .max_by_key(|&(a, b)| (b - a, std::cmp::Reverse(a)))
                    .unwrap_or((start, start));
                let mut trial = self.holes.clone();
                for r in a..b {
                    trial.insert((old.function, r));
                }
                self.build(points, &old.points, &trial)
            }
            [] if old.part == Part::Time => return 0,
            [] if old.points.len() > 1 => {
                let mut sorted = old.points.clone();
                sorted.sort_by_key(|&i| points.get(i).map_or(0, |p| p.address));
                let (left, right) = sorted.split_at(sorted.len() / 2);
                let mut halves = self.build(points, left, &self.holes);
                halves.extend(self.build(points, right, &self.holes));
                halves
            }
            [] => match (old.part, old.points.first().and_then(|&i| points.get(i))) {
                (Part::Whole, Some(p)) if p.time.is_some() => split_value_and_time(&old, p),
                _ => {
                    self.refused_points.extend(old.points.iter().copied());
                    return 0;
                }
            },
        };
        if replacement.is_empty() || replacement == [old.clone()] {
            self.refused_points.extend(old.points.iter().copied());
            return 0;
        }
        let n = replacement.len();
        self.requests.splice(index..=index, replacement);
        n
    }

    /// A refused range whose gaps have all been read since, but one, has that one as its hole
    /// (the bisection read both sides of it).
    fn learn_from_refusals(&mut self, points: &[Point]) {
        let mut occupied: BTreeSet<Reg> = BTreeSet::new();
        for p in points {
            for r in registers_of(p, Part::Whole) {
                occupied.insert((p.function, r));
            }
        }
        let mut learned = Vec::new();
        for &(f, s, e) in &self.refused {
            let mut gaps: Vec<(u32, u32)> = Vec::new();
            for r in (s..e).filter(|&r| !occupied.contains(&(f, r))) {
                match gaps.last_mut() {
                    Some(g) if g.1 == r => g.1 = r + 1,
                    _ => gaps.push((r, r + 1)),
                }
            }
            let unknown: Vec<(u32, u32)> = gaps
                .into_iter()
                .filter(|&(a, b)| (a..b).any(|r| !self.readable.contains(&(f, r))))
                .collect();
            if let [(a, b)] = unknown.as_slice() {
                learned.extend((*a..*b).map(|r| (f, r)));
            }
        }
        self.holes.extend(learned);
    }

    /// True when `[start, end)` of `function` spans a hole or contains a refused range.
    fn blocked(&self, holes: &BTreeSet<Reg>, function: Function, start: u32, end: u32) -> bool {
        holes
            .range((function, start)..(function, end))
            .next()
            .is_some()
            || self
                .refused
                .iter()
                .any(|&(f, s, e)| f == function && start <= s && e <= end)
    }

    /// Coalesce the points `idxs` into requests, never spanning `holes` or containing a refused
    /// range; a point whose value+time hull spans a hole gets a value item and a time item, and
    /// points sharing a sample-time register read it in one request.
    fn build(&self, points: &[Point], idxs: &[usize], holes: &BTreeSet<Reg>) -> Vec<ReadRequest> {
        let mut items: Vec<(Function, u32, u32, Kind, usize)> = Vec::new();
        let mut alone = Vec::new();
        for &i in idxs {
            let Some(p) = points.get(i) else { continue };
            let Some((s, e)) = point_span(p) else {
                continue;
            };
            let value = (
                u32::from(p.address),
                u32::from(p.address) + u32::from(p.width()),
            );
            if self.refused_points.contains(&i) {
                let mut r = make_request(p.function, value.0, value.1, vec![i]);
                r.part = if p.time.is_some() {
                    Part::Value
                } else {
                    Part::Whole
                };
                alone.push(r);
                continue;
            }
            match p.time {
                Some((t, _)) if self.blocked(holes, p.function, s, e) => {
                    items.push((p.function, value.0, value.1, Kind::Value, i));
                    items.push((p.function, u32::from(t), u32::from(t) + 2, Kind::Time, i));
                }
                Some(_) => items.push((p.function, s, e, Kind::Whole, i)),
                None => items.push((p.function, s, e, Kind::Timeless, i)),
            }
        }
        // Time items coalesce among themselves only; values and wholes among themselves.
        items.sort_by_key(|&(f, s, e, k, i)| (k == Kind::Time, f, s, e, i));
        let mut requests: Vec<ReadRequest> = Vec::new();
        // (function, start, end, kind of the group, points)
        let mut current: Option<(Function, u32, u32, Kind, Vec<usize>)> = None;
        for (function, start, end, kind, idx) in items {
            if let Some(cur) = current.as_mut() {
                let (f, s, e, k, ref mut pts) = *cur;
                let new_end = e.max(end);
                let same_side = (k == Kind::Time) == (kind == Kind::Time);
                let kinds_ok = same_side
                    && (k == kind || k == Kind::Timeless || kind == Kind::Timeless)
                    // A `Whole` group takes timeless points, a `Value` group too; but `Whole`
                    // and `Value` items do not mix (their times are read differently).
                    && !matches!((k, kind), (Kind::Whole, Kind::Value) | (Kind::Value, Kind::Whole));
                if f == function
                    && kinds_ok
                    && start <= e + u32::from(self.max_gap)
                    && new_end - s <= u32::from(function.max_per_read())
                    && !self.blocked(holes, function, s, new_end)
                {
                    if !pts.contains(&idx) {
                        pts.push(idx);
                    }
                    cur.2 = new_end;
                    if k == Kind::Timeless {
                        cur.3 = kind;
                    }
                    continue;
                }
            }
            if let Some(group) = current.take() {
                requests.push(group_request(group));
            }
            current = Some((function, start, end, kind, vec![idx]));
        }
        if let Some(group) = current {
            requests.push(group_request(group));
        }
        requests.extend(alone);
        requests.sort_by_key(|r| (r.function, r.start, r.count));
        requests
    }
}

/// The registers of `p` that a request of `part` reads.
fn registers_of(p: &Point, part: Part) -> Vec<u32> {
    let value = u32::from(p.address)..u32::from(p.address) + u32::from(p.width());
    let time = p
        .time
        .map(|(t, _)| u32::from(t)..u32::from(t) + 2)
        .unwrap_or(0..0);
    match part {
        Part::Whole => value.chain(time).collect(),
        Part::Value => value.collect(),
        Part::Time => time.collect(),
    }
}

fn group_request(
    (function, start, end, kind, points): (Function, u32, u32, Kind, Vec<usize>),
) -> ReadRequest {
    let mut r = make_request(function, start, end, points);
    r.part = match kind {
        Kind::Timeless | Kind::Whole => Part::Whole,
        Kind::Value => Part::Value,
        Kind::Time => Part::Time,
    };
    r
}

/// A single point's refused value+time hull as a time read and a value read.
fn split_value_and_time(old: &ReadRequest, p: &Point) -> Vec<ReadRequest> {
    let Some((t, _)) = p.time else {
        return Vec::new();
    };
    let value_start = u32::from(p.address);
    let value = make_request(
        old.function,
        value_start,
        value_start + u32::from(p.width()),
        old.points.clone(),
    );
    let time = make_request(
        old.function,
        u32::from(t),
        u32::from(t) + 2,
        old.points.clone(),
    );
    vec![
        ReadRequest {
            part: Part::Time,
            ..time
        },
        ReadRequest {
            part: Part::Value,
            ..value
        },
    ]
}

fn make_request(function: Function, start: u32, end: u32, points: Vec<usize>) -> ReadRequest {
    // Spans are checked by `point_span` to lie within 0..=65536 and the merge keeps
    // `end - start` within the protocol limit, so both conversions hold.
    let start16 = u16::try_from(start).unwrap_or(u16::MAX);
    let count = u16::try_from(end - start).unwrap_or(u16::MAX);
    ReadRequest {
        function,
        start: start16,
        count,
        points,
        part: Part::Whole,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::QuantityKind;
    use crate::sources::modbus::config::{DataType, WordOrder};

    fn pt(function: Function, address: u16, data_type: DataType) -> Point {
        Point {
            name: format!("p{address}"),
            function,
            address,
            data_type,
            word_order: WordOrder::Abcd,
            bit: None,
            scale: 1.0,
            offset: 0.0,
            channel: crate::conversion::Channel::default(),
            unit: String::new(),
            quantity: QuantityKind::Other,
            time: None,
            writable: false,
        }
    }

    fn spans(plan: &ReadPlan) -> Vec<(Function, u16, u16)> {
        plan.requests
            .iter()
            .map(|r| (r.function, r.start, r.count))
            .collect()
    }

    #[test]
    fn adjacent_registers_merge_into_one_request() {
        // telegraf's example: [1,2,3,5,6] with no gap allowed → (1,3) and (5,2).
        let pts: Vec<Point> = [1, 2, 3, 5, 6]
            .iter()
            .map(|&a| pt(Function::Holding, a, DataType::U16))
            .collect();
        let plan = ReadPlan::new(&pts, 0);
        assert_eq!(
            spans(&plan),
            vec![(Function::Holding, 1, 3), (Function::Holding, 5, 2)]
        );
        // Reading through one unused register joins them.
        let plan = ReadPlan::new(&pts, 1);
        assert_eq!(spans(&plan), vec![(Function::Holding, 1, 6)]);
        assert_eq!(plan.requests[0].points, vec![0, 1, 2, 3, 4]);
    }

    #[test]
    fn functions_are_never_mixed_and_widths_count() {
        let pts = vec![
            pt(Function::Input, 0, DataType::F32),
            pt(Function::Holding, 2, DataType::F64),
            pt(Function::Input, 2, DataType::U64),
            pt(Function::Coil, 0, DataType::Bool),
            pt(Function::Coil, 1, DataType::Bool),
        ];
        let plan = ReadPlan::new(&pts, 0);
        assert_eq!(
            spans(&plan),
            vec![
                (Function::Coil, 0, 2),
                (Function::Holding, 2, 4),
                (Function::Input, 0, 6)
            ]
        );
    }

    #[test]
    fn the_125_register_limit_splits_requests() {
        // 0..=123 (124 registers) then a f32 at 124-125 would make 126 registers.
        let pts = vec![
            pt(Function::Holding, 0, DataType::U16),
            pt(Function::Holding, 123, DataType::U16),
            pt(Function::Holding, 124, DataType::F32),
        ];
        let plan = ReadPlan::new(&pts, 200);
        assert_eq!(
            spans(&plan),
            vec![(Function::Holding, 0, 124), (Function::Holding, 124, 2)]
        );
        // Exactly 125 fits.
        let pts = vec![
            pt(Function::Holding, 0, DataType::U16),
            pt(Function::Holding, 123, DataType::F32),
        ];
        assert_eq!(
            spans(&ReadPlan::new(&pts, 200)),
            vec![(Function::Holding, 0, 125)]
        );
    }

    #[test]
    fn bits_allow_2000_per_request() {
        let pts = vec![
            pt(Function::Discrete, 0, DataType::Bool),
            pt(Function::Discrete, 1999, DataType::Bool),
            pt(Function::Discrete, 2000, DataType::Bool),
        ];
        let plan = ReadPlan::new(&pts, u16::MAX);
        assert_eq!(
            spans(&plan),
            vec![(Function::Discrete, 0, 2000), (Function::Discrete, 2000, 1)]
        );
    }

    #[test]
    fn value_and_sample_time_are_read_together() {
        let mut a = pt(Function::Input, 0, DataType::F32);
        a.time = Some((40, WordOrder::Abcd));
        let plan = ReadPlan::new(&[a.clone()], 0);
        assert_eq!(spans(&plan), vec![(Function::Input, 0, 42)]);
        a.time = Some((200, WordOrder::Abcd));
        assert!(point_span(&a).is_none());
        assert!(point_span_error(&a).is_some_and(|e| e.contains("time_address")));
    }

    #[test]
    fn a_point_past_the_end_of_the_table_is_an_error() {
        let p = pt(Function::Holding, 65_535, DataType::F32);
        assert!(point_span(&p).is_none());
        assert!(point_span_error(&p).is_some_and(|e| e.contains("65535")));
        assert!(point_span(&pt(Function::Holding, 65_534, DataType::F32)).is_some());
    }

    #[test]
    fn a_refused_request_is_split_at_its_largest_unread_gap() {
        let pts = vec![
            pt(Function::Coil, 0, DataType::Bool),
            pt(Function::Holding, 0, DataType::U16),
            pt(Function::Holding, 5, DataType::F32),
            pt(Function::Holding, 9, DataType::U16),
        ];
        let mut plan = ReadPlan::new(&pts, 10);
        assert_eq!(
            spans(&plan),
            vec![(Function::Coil, 0, 1), (Function::Holding, 0, 10)]
        );
        // Gaps 1..=4 and 7..=8 are unread: split at the larger one, keep the rest coalesced.
        assert_eq!(plan.split(1, &pts), 2);
        assert_eq!(
            spans(&plan),
            vec![
                (Function::Coil, 0, 1),
                (Function::Holding, 0, 1),
                (Function::Holding, 5, 5)
            ]
        );
        assert_eq!(plan.requests[2].points, vec![2, 3]);
        // Both halves are answered: 7..=8 is readable, so 1..=4, the only unread gap of the
        // refused 0..=9, is learned as the hole when the plan is rebuilt after the poll.
        let (a, b) = (plan.requests[1].clone(), plan.requests[2].clone());
        plan.mark_read(&a);
        plan.mark_read(&b);
        assert!(plan.rebuild_if_replanned(&pts));
        assert_eq!(
            spans(&plan),
            vec![
                (Function::Coil, 0, 1),
                (Function::Holding, 0, 1),
                (Function::Holding, 5, 5)
            ]
        );
        assert_eq!(
            plan.holes(),
            vec![Hole {
                function: Function::Holding,
                first: 1,
                last: 4
            }]
        );
        assert!(!plan.rebuild_if_replanned(&pts));
    }

    /// Issue 10: registers 100..=115 and 120..=121 with a hole in between: after one refusal,
    /// two requests instead of 18.
    #[test]
    fn a_single_unread_gap_is_learned_as_a_hole() {
        let pts: Vec<Point> = (100..=115)
            .chain(120..=121)
            .map(|a| pt(Function::Holding, a, DataType::U16))
            .collect();
        let mut plan = ReadPlan::new(&pts, 10);
        assert_eq!(spans(&plan), vec![(Function::Holding, 100, 22)]);
        assert_eq!(plan.split(0, &pts), 2);
        assert_eq!(
            spans(&plan),
            vec![(Function::Holding, 100, 16), (Function::Holding, 120, 2)]
        );
        assert_eq!(
            plan.holes(),
            vec![Hole {
                function: Function::Holding,
                first: 116,
                last: 119
            }]
        );
        assert!(plan.rebuild_if_replanned(&pts));
        assert_eq!(plan.requests.len(), 2);
    }

    /// Issue 10: 25 points sharing one sample time behind a hole read the time once: 2 requests
    /// and 27 registers per cycle.
    #[test]
    fn a_shared_time_register_is_read_once_per_group() {
        let pts: Vec<Point> = (0..25)
            .map(|a| {
                let mut p = pt(Function::Input, a, DataType::I16);
                p.time = Some((60, WordOrder::Abcd));
                p
            })
            .collect();
        let mut plan = ReadPlan::new(&pts, 10);
        assert_eq!(spans(&plan), vec![(Function::Input, 0, 62)]);
        assert_eq!(plan.split(0, &pts), 2);
        assert!(plan.rebuild_if_replanned(&pts));
        assert_eq!(
            spans(&plan),
            vec![(Function::Input, 0, 25), (Function::Input, 60, 2)]
        );
        assert_eq!(
            (plan.requests[0].part, plan.requests[1].part),
            (Part::Value, Part::Time)
        );
        assert_eq!(plan.requests[1].points, (0..25).collect::<Vec<_>>());
        // Declared in the profile, the hole gives the same plan without any refusal.
        let declared = ReadPlan::with_holes(
            &pts,
            10,
            &[Hole {
                function: Function::Input,
                first: 25,
                last: 59,
            }],
        );
        assert_eq!(declared.requests, plan.requests);
    }

    #[test]
    fn a_declared_hole_is_never_spanned_and_timeless_points_join_value_reads() {
        let mut a = pt(Function::Holding, 0, DataType::U16);
        a.time = Some((20, WordOrder::Abcd));
        let b = pt(Function::Holding, 1, DataType::U16);
        let c = pt(Function::Holding, 6, DataType::U16);
        let pts = vec![a, b, c];
        let hole = Hole {
            function: Function::Holding,
            first: 3,
            last: 4,
        };
        let plan = ReadPlan::with_holes(&pts, 10, &[hole]);
        assert_eq!(
            spans(&plan),
            vec![
                (Function::Holding, 0, 2),
                (Function::Holding, 6, 1),
                (Function::Holding, 20, 2)
            ]
        );
        assert_eq!(plan.requests[0].part, Part::Value);
        assert_eq!(plan.requests[0].points, vec![0, 1]);
    }

    #[test]
    fn a_refused_value_time_hull_splits_into_value_and_time_reads() {
        let mut a = pt(Function::Input, 4, DataType::U32);
        a.time = Some((30, WordOrder::Abcd));
        let pts = vec![a];
        let mut plan = ReadPlan::new(&pts, 0);
        assert_eq!(spans(&plan), vec![(Function::Input, 4, 28)]);
        assert_eq!(plan.split(0, &pts), 2);
        assert_eq!(
            spans(&plan),
            vec![(Function::Input, 4, 2), (Function::Input, 30, 2)]
        );
        assert_eq!(
            (plan.requests[0].part, plan.requests[1].part),
            (Part::Value, Part::Time)
        );
        // Neither half can be split further: the point itself is refused.
        assert_eq!(plan.split(1, &pts), 0);
        assert_eq!(plan.split(0, &pts), 0);
        // A point without a sample time cannot be split either.
        let b = vec![pt(Function::Input, 4, DataType::U32)];
        let mut plan = ReadPlan::new(&b, 0);
        assert_eq!(plan.split(0, &b), 0);
        assert_eq!(plan.requests.len(), 1);
    }

    #[test]
    fn contiguous_points_refused_are_bisected_down_to_the_refused_point() {
        let pts: Vec<Point> = (0..4)
            .map(|a| pt(Function::Holding, a, DataType::U16))
            .collect();
        let mut plan = ReadPlan::new(&pts, 0);
        // No gap: a point's own register is refused. Halves, then the refused half again.
        assert_eq!(plan.split(0, &pts), 2);
        assert_eq!(
            spans(&plan),
            vec![(Function::Holding, 0, 2), (Function::Holding, 2, 2)]
        );
        assert_eq!(plan.split(1, &pts), 2);
        assert_eq!(
            spans(&plan),
            vec![
                (Function::Holding, 0, 2),
                (Function::Holding, 2, 1),
                (Function::Holding, 3, 1)
            ]
        );
        assert_eq!(plan.split(1, &pts), 0);
        // After the poll, register 2's point is read alone and the rest coalesced again, but
        // never into a range containing a refused one.
        let ok = plan.requests[2].clone();
        plan.mark_read(&ok);
        let ok = plan.requests[0].clone();
        plan.mark_read(&ok);
        assert!(plan.rebuild_if_replanned(&pts));
        assert_eq!(
            spans(&plan),
            vec![
                (Function::Holding, 0, 2),
                (Function::Holding, 2, 1),
                (Function::Holding, 3, 1)
            ]
        );
    }

    #[test]
    fn requests_display_their_range() {
        let r = ReadRequest {
            function: Function::Input,
            start: 0,
            count: 42,
            points: vec![],
            part: Part::Whole,
        };
        assert_eq!(r.to_string(), "input (FC 04) 0..=41 (42 registers)");
    }
}
