//! The body compression of reads, chosen by the link ([`ReadCompression::Auto`]).
//!
//! On the real service every read request is capped (about 10 MB/s of wire bytes), so a
//! body compressed 3x reads about 3x the rows per second, for some CPU on both ends; on a
//! fast link the same compression only costs CPU. No fixed choice is right everywhere, so
//! the client measures as it reads:
//!
//! * every row stream cuts what it reads into **segments** (at least [`SEGMENT_BYTES`]
//!   decoded and [`SEGMENT_TIME`] spent waiting for rows) and reports, per codec, the
//!   decoded bytes per second of *waiting* (the network and the decoding together; the time
//!   the caller spends with its rows does not count, so a slow consumer never makes a codec
//!   look slow), the wire bytes per second, and the compression ratio;
//! * the **link** is the wire rate of one stream (uncompressed segments say it best; any
//!   codec's wire rate is a lower bound);
//! * a codec measured in the last [`FRESH`] is expected to read at its measured rate; any
//!   other at `min(link × ratio, ceiling)`, its ratio measured or assumed, the ceiling what
//!   one core compresses and decompresses per second ([`Prior`]);
//! * each read (and each stream at the end of each segment) takes the codec expected to be
//!   fastest. An expected rate that was not measured is tried by one stream at a time (a
//!   **probe**); a stream that changes codec stops its body at a batch boundary and asks for
//!   the rest in the new codec (the resume path: nothing is read twice or skipped).
//!
//! What is measured is kept per endpoint for the whole process, so a reader opened later
//! (the next shard, the next epoch) starts with the codec the link called for.
//!
//! A codec the service answers without (it ignored the `Accept-Encoding`) is not asked for
//! again by this client.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::protocol::codec::BodyEncoding;
pub use crate::protocol::codec::ReadCompression;

/// The least a segment decodes before it is measured.
pub(super) const SEGMENT_BYTES: u64 = 256 << 10;
/// The least waiting a segment takes before it is measured.
pub(super) const SEGMENT_TIME: Duration = Duration::from_millis(20);
/// How long a measured rate is trusted; older ones are estimated again (and probed anew
/// when the estimate says another codec may now be faster).
pub(super) const FRESH: Duration = Duration::from_secs(30);
/// An uncompressed request at least this fast is not limited by its link, and no compressed
/// codec is tried: on such links the cores are the limit, and compression costs them on both
/// ends. (Measured rates cannot tell this alone: under contention a compressed body, decoded
/// on a thread of its own, gets a larger share of the cores than the others.)
const FAST_LINK: f64 = 64e6;
/// How long a probe may go without a measurement before another stream may probe.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// What is assumed of a codec before it is measured.
#[derive(Debug, Clone, Copy)]
struct Prior {
    /// Decoded bytes per wire byte.
    ratio: f64,
    /// Decoded bytes per second one stream can get through compression at the service and
    /// decompression here (one core each).
    ceiling: f64,
}

fn prior(codec: BodyEncoding) -> Prior {
    match codec {
        BodyEncoding::Identity => Prior {
            ratio: 1.0,
            ceiling: f64::INFINITY,
        },
        BodyEncoding::Lz4Frame => Prior {
            ratio: 2.0,
            ceiling: 1.0e9,
        },
        BodyEncoding::Zstd => Prior {
            ratio: 3.0,
            ceiling: 0.4e9,
        },
    }
}

fn index(codec: BodyEncoding) -> usize {
    match codec {
        BodyEncoding::Identity => 0,
        BodyEncoding::Lz4Frame => 1,
        BodyEncoding::Zstd => 2,
    }
}

/// One measured segment of a row stream.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Segment {
    /// Bytes of Arrow IPC decoded.
    pub decoded: u64,
    /// Bytes on the wire (as sent, compressed or not).
    pub wire: u64,
    /// Time spent waiting for them.
    pub busy: Duration,
}

impl Segment {
    /// Whether it is long enough to be measured.
    pub fn complete(&self) -> bool {
        self.decoded >= SEGMENT_BYTES && self.busy >= SEGMENT_TIME
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct Measured {
    /// Decoded bytes per second of one stream.
    rate: Option<f64>,
    at: Option<Instant>,
    /// Decoded bytes per wire byte.
    ratio: Option<f64>,
    unsupported: bool,
}

#[derive(Debug, Default)]
struct State {
    codecs: [Measured; 3],
    /// Wire bytes per second of one stream, and when it was last measured uncompressed.
    link: Option<f64>,
    link_plain_at: Option<Instant>,
    probe: Option<(BodyEncoding, Instant)>,
}

fn ewma(old: Option<f64>, new: f64) -> f64 {
    match old {
        Some(o) => 0.5 * o + 0.5 * new,
        None => new,
    }
}

/// The choice of codec for the reads of one endpoint, shared by every client of it in this
/// process and all their streams (what one reader learns of the link, the next one starts
/// with).
#[derive(Debug, Default)]
pub(super) struct CodecChooser {
    state: Mutex<State>,
}

impl CodecChooser {
    /// The chooser of `endpoint` in this process.
    pub fn shared(endpoint: &str) -> Arc<CodecChooser> {
        static BY_ENDPOINT: OnceLock<Mutex<HashMap<String, Arc<CodecChooser>>>> = OnceLock::new();
        BY_ENDPOINT
            .get_or_init(Default::default)
            .lock()
            .entry(endpoint.to_string())
            .or_default()
            .clone()
    }
}

/// What one codec is expected to read at.
#[derive(Debug, Clone, Copy)]
struct Expected {
    codec: BodyEncoding,
    rate: f64,
    measured: bool,
}

impl State {
    fn fresh(&self, codec: BodyEncoding, now: Instant) -> Option<f64> {
        let m = &self.codecs[index(codec)];
        match (m.rate, m.at) {
            (Some(r), Some(at)) if now.saturating_duration_since(at) < FRESH => Some(r),
            _ => None,
        }
    }

    fn expected(&self, now: Instant) -> Vec<Expected> {
        let Some(link) = self.link else {
            return Vec::new();
        };
        BodyEncoding::ALL
            .iter()
            .filter(|c| !self.codecs[index(**c)].unsupported)
            .map(|&codec| match self.fresh(codec, now) {
                Some(rate) => Expected {
                    codec,
                    rate,
                    measured: true,
                },
                None if codec != BodyEncoding::Identity && link >= FAST_LINK => Expected {
                    codec,
                    rate: 0.0,
                    measured: false,
                },
                None => {
                    let p = prior(codec);
                    let ratio = self.codecs[index(codec)].ratio.unwrap_or(p.ratio);
                    Expected {
                        codec,
                        rate: (link * ratio).min(p.ceiling),
                        measured: false,
                    }
                }
            })
            .collect()
    }
}

impl CodecChooser {
    /// The codec the next read (or the next segment of a stream) should ask for.
    pub fn pick(&self, now: Instant) -> BodyEncoding {
        let mut st = self.state.lock();
        let expected = st.expected(now);
        let Some(best) = expected
            .iter()
            .copied()
            .max_by(|a, b| a.rate.total_cmp(&b.rate))
        else {
            // Nothing measured yet: start uncompressed, which measures the link.
            return BodyEncoding::Identity;
        };
        let best_measured = expected
            .iter()
            .filter(|e| e.measured)
            .max_by(|a, b| a.rate.total_cmp(&b.rate))
            .map_or(BodyEncoding::Identity, |e| e.codec);
        if best.measured {
            return best.codec;
        }
        match st.probe {
            Some((_, since)) if now.saturating_duration_since(since) < PROBE_TIMEOUT => {
                best_measured
            }
            _ => {
                st.probe = Some((best.codec, now));
                best.codec
            }
        }
    }

    /// Takes in a measured segment read in `codec`.
    pub fn record(&self, codec: BodyEncoding, segment: Segment, now: Instant) {
        let busy = segment.busy.as_secs_f64();
        if busy <= 0.0 || segment.decoded == 0 || segment.wire == 0 {
            return;
        }
        let mut st = self.state.lock();
        let rate = segment.decoded as f64 / busy;
        let wire_rate = segment.wire as f64 / busy;
        let fresh = st.fresh(codec, now);
        let m = &mut st.codecs[index(codec)];
        m.rate = Some(ewma(fresh, rate));
        m.at = Some(now);
        m.ratio = Some(ewma(m.ratio, segment.decoded as f64 / segment.wire as f64));
        // The link: an uncompressed segment says it; a compressed one is a lower bound,
        // and takes over once the uncompressed measure is stale.
        let plain_fresh = st
            .link_plain_at
            .is_some_and(|at| now.saturating_duration_since(at) < FRESH);
        if codec == BodyEncoding::Identity {
            st.link = Some(ewma(plain_fresh.then_some(st.link).flatten(), wire_rate));
            st.link_plain_at = Some(now);
        } else if !plain_fresh {
            st.link = Some(ewma(st.link, wire_rate));
        } else if let Some(link) = st.link {
            st.link = Some(link.max(wire_rate));
        }
        if st.probe.is_some_and(|(c, _)| c == codec) {
            st.probe = None;
        }
    }

    /// The service answered `got` to a request for `asked`: a codec it does not send is not
    /// asked for again.
    pub fn answered(&self, asked: BodyEncoding, got: BodyEncoding) {
        if asked != got {
            let mut st = self.state.lock();
            st.codecs[index(asked)].unsupported = true;
            if st.probe.is_some_and(|(c, _)| c == asked) {
                st.probe = None;
            }
            tracing::debug!(
                asked = asked.name(),
                got = got.name(),
                "the service does not answer in the asked read compression; not asking again"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MB: f64 = 1e6;

    /// A segment of `secs` of waiting at `wire_rate` wire bytes/s compressed `ratio` times.
    fn seg(wire_rate: f64, ratio: f64, secs: f64) -> Segment {
        let wire = (wire_rate * secs) as u64;
        Segment {
            decoded: (wire as f64 * ratio) as u64,
            wire,
            busy: Duration::from_secs_f64(secs),
        }
    }

    /// Simulates one stream on a link of `link` wire bytes/s per stream whose codecs reach
    /// at most `ceiling` decoded bytes/s, and returns the codec it settles on.
    fn settle(link: f64, ceilings: [(BodyEncoding, f64, f64); 3]) -> (BodyEncoding, usize) {
        let chooser = CodecChooser::default();
        let t0 = Instant::now();
        let mut codec = chooser.pick(t0);
        let mut switches = 0;
        for i in 0..40 {
            let now = t0 + Duration::from_millis(100 * i);
            let (_, ratio, ceiling) = ceilings.iter().find(|c| c.0 == codec).copied().unwrap();
            let decoded_rate = (link * ratio).min(ceiling);
            chooser.record(codec, seg(decoded_rate / ratio, ratio, 0.1), now);
            let next = chooser.pick(now);
            if next != codec {
                switches += 1;
            }
            codec = next;
        }
        (codec, switches)
    }

    #[test]
    fn a_capped_link_settles_on_the_best_ratio_a_fast_one_on_none() {
        let codecs = |zstd_ceiling, lz4_ceiling| {
            [
                (BodyEncoding::Identity, 1.0, f64::INFINITY),
                (BodyEncoding::Lz4Frame, 2.0, lz4_ceiling),
                (BodyEncoding::Zstd, 3.3, zstd_ceiling),
            ]
        };
        // 10 MB/s per request: zstd triples the rows.
        let (c, switches) = settle(10.0 * MB, codecs(400.0 * MB, 1000.0 * MB));
        assert_eq!(c, BodyEncoding::Zstd);
        assert_eq!(switches, 1, "straight from the first segment to zstd");
        // Loopback at 800 MB/s per stream: compression only costs.
        let (c, _) = settle(800.0 * MB, codecs(120.0 * MB, 300.0 * MB));
        assert_eq!(c, BodyEncoding::Identity);
        // 40 MB/s with a fast zstd: zstd; with slow zstd but fast lz4: lz4.
        assert_eq!(
            settle(40.0 * MB, codecs(900.0 * MB, 900.0 * MB)).0,
            BodyEncoding::Zstd
        );
        assert_eq!(
            settle(40.0 * MB, codecs(60.0 * MB, 900.0 * MB)).0,
            BodyEncoding::Lz4Frame
        );
    }

    #[test]
    fn one_probe_at_a_time_and_stale_rates_are_probed_again() {
        let chooser = CodecChooser::default();
        let t0 = Instant::now();
        assert_eq!(chooser.pick(t0), BodyEncoding::Identity);
        chooser.record(BodyEncoding::Identity, seg(10.0 * MB, 1.0, 0.1), t0);
        // The first stream probes zstd; the others keep reading uncompressed meanwhile.
        assert_eq!(chooser.pick(t0), BodyEncoding::Zstd);
        assert_eq!(chooser.pick(t0), BodyEncoding::Identity);
        // A probe that never reports frees the slot.
        assert_eq!(chooser.pick(t0 + PROBE_TIMEOUT), BodyEncoding::Zstd);
        chooser.record(BodyEncoding::Zstd, seg(10.0 * MB, 3.0, 0.1), t0);
        assert_eq!(chooser.pick(t0), BodyEncoding::Zstd);
        // The link got fast and zstd's rate went stale: uncompressed again, measured.
        let later = t0 + FRESH + Duration::from_secs(1);
        chooser.record(BodyEncoding::Identity, seg(900.0 * MB, 1.0, 0.1), later);
        assert_eq!(chooser.pick(later), BodyEncoding::Identity, "a fast link");
        // At 50 MB/s zstd is estimated at 150 MB/s and tried; measured slower, it loses, and
        // lz4 is tried next.
        let later = later + FRESH + Duration::from_secs(1);
        chooser.record(BodyEncoding::Identity, seg(50.0 * MB, 1.0, 0.1), later);
        assert_eq!(
            chooser.pick(later),
            BodyEncoding::Zstd,
            "estimated 150 MB/s"
        );
        chooser.record(BodyEncoding::Zstd, seg(10.0 * MB, 3.0, 0.1), later);
        assert_eq!(
            chooser.pick(later),
            BodyEncoding::Lz4Frame,
            "estimated 100 MB/s"
        );
        chooser.record(BodyEncoding::Lz4Frame, seg(20.0 * MB, 2.0, 0.1), later);
        assert_eq!(chooser.pick(later), BodyEncoding::Identity);
    }

    #[test]
    fn a_codec_the_service_ignores_is_not_asked_again() {
        let chooser = CodecChooser::default();
        let t0 = Instant::now();
        chooser.record(BodyEncoding::Identity, seg(10.0 * MB, 1.0, 0.1), t0);
        assert_eq!(chooser.pick(t0), BodyEncoding::Zstd);
        chooser.answered(BodyEncoding::Zstd, BodyEncoding::Identity);
        assert_eq!(chooser.pick(t0), BodyEncoding::Lz4Frame);
        chooser.answered(BodyEncoding::Lz4Frame, BodyEncoding::Identity);
        assert_eq!(chooser.pick(t0), BodyEncoding::Identity);
    }

    #[test]
    fn short_segments_are_not_measured_and_names_parse() {
        assert!(!seg(10.0 * MB, 1.0, 0.001).complete());
        assert!(seg(10.0 * MB, 1.0, 0.05).complete());
        for (text, want) in [
            ("auto", ReadCompression::Auto),
            ("NONE", ReadCompression::Fixed(BodyEncoding::Identity)),
            ("zstd", ReadCompression::Fixed(BodyEncoding::Zstd)),
            ("lz4", ReadCompression::Fixed(BodyEncoding::Lz4Frame)),
            (
                "x-lz4-frame",
                ReadCompression::Fixed(BodyEncoding::Lz4Frame),
            ),
        ] {
            assert_eq!(text.parse::<ReadCompression>(), Ok(want));
            assert_eq!(want.name().parse::<ReadCompression>(), Ok(want));
        }
        let e = "gzip".parse::<ReadCompression>().unwrap_err();
        assert!(e.contains("\"gzip\" is not a read compression"), "{e}");
    }
}
