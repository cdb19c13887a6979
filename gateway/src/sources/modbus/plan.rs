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
//!   address). When a coalesced request is refused that way, [`ReadPlan::split`] replaces it with
//!   one request per point. When a point's value+time hull is still refused (an unmapped hole
//!   between the value and the time register), it is split once more into a value request and
//!   a time request ([`Part`]); those two reads can straddle a sample tick, in which case the
//!   reading carries the next sample's time, which is why the hull is always tried first. A
//!   point refused even then is reported to the operator.

use std::fmt;

use super::config::{Function, Point};

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
        )
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

/// The requests for one device.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ReadPlan {
    /// Requests in function and address order.
    pub requests: Vec<ReadRequest>,
}

impl ReadPlan {
    /// Coalesce `points` into requests. Points whose span is invalid (see [`point_span`]) are
    /// left out; validation rejects such configs before a plan is built.
    #[must_use]
    pub fn new(points: &[Point], max_gap: u16) -> Self {
        let mut items: Vec<(Function, u32, u32, usize)> = points
            .iter()
            .enumerate()
            .filter_map(|(i, p)| point_span(p).map(|(s, e)| (p.function, s, e, i)))
            .collect();
        items.sort_by_key(|&(f, s, e, i)| (f, s, e, i));

        let mut requests: Vec<ReadRequest> = Vec::new();
        let mut current: Option<(Function, u32, u32, Vec<usize>)> = None;
        for (function, start, end, idx) in items {
            if let Some(cur) = current.as_mut() {
                let (f, s, e, ref mut pts) = *cur;
                let gap_ok = start <= e + u32::from(max_gap);
                let size_ok = end.max(e) - s <= u32::from(function.max_per_read());
                if f == function && gap_ok && size_ok {
                    pts.push(idx);
                    cur.2 = e.max(end);
                    continue;
                }
            }
            if let Some((f, s, e, pts)) = current.take() {
                requests.push(make_request(f, s, e, pts));
            }
            current = Some((function, start, end, vec![idx]));
        }
        if let Some((f, s, e, pts)) = current {
            requests.push(make_request(f, s, e, pts));
        }
        Self { requests }
    }

    /// Re-plan request `index` after the device refused it with exception 02: a coalesced
    /// request becomes one request per point; a single point's value+time hull becomes a value
    /// request and a time request. Returns how many requests replaced it, or 0 when it cannot
    /// be split further (the point itself is refused).
    pub fn split(&mut self, index: usize, points: &[Point]) -> usize {
        let Some(old) = self.requests.get(index) else {
            return 0;
        };
        let replacement: Vec<ReadRequest> = if old.points.len() > 1 {
            old.points
                .iter()
                .filter_map(|&i| {
                    let (s, e) = point_span(points.get(i)?)?;
                    Some(make_request(old.function, s, e, vec![i]))
                })
                .collect()
        } else {
            let Some(p) = old.points.first().and_then(|&i| points.get(i)) else {
                return 0;
            };
            match (old.part, p.time) {
                (Part::Whole, Some((t, _))) => {
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
                _ => return 0,
            }
        };
        let n = replacement.len();
        self.requests.splice(index..=index, replacement);
        n
    }
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
            unit: String::new(),
            quantity: QuantityKind::Other,
            time: None,
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
    fn a_refused_request_splits_into_one_per_point() {
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
        assert_eq!(plan.split(1, &pts), 3);
        assert_eq!(
            spans(&plan),
            vec![
                (Function::Coil, 0, 1),
                (Function::Holding, 0, 1),
                (Function::Holding, 5, 2),
                (Function::Holding, 9, 1)
            ]
        );
        assert_eq!(plan.requests[2].points, vec![2]);
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
            vec![(Function::Input, 30, 2), (Function::Input, 4, 2)]
        );
        assert_eq!(
            (plan.requests[0].part, plan.requests[1].part),
            (Part::Time, Part::Value)
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
