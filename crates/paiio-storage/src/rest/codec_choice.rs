//! The body compression of reads, chosen by the link ([`ReadCompression::Auto`]).
//!
//! On the real service every read request is capped (about 10 MB/s of wire bytes), so a
//! body compressed 3x reads about 3x the rows per second, for some CPU on both ends; on a
//! fast link the same compression only costs CPU. No fixed choice is right everywhere, so
//! the client measures as it reads:
//!
//! * every row stream cuts what it reads into **segments** (at least [`SEGMENT_BYTES`]
//!   decoded over at least [`SEGMENT_TIME`]) and reports the decoded bytes per second of
//!   wall time, the wire bytes per second, and the compression ratio. Wall time, not the
//!   time spent waiting for rows: compression's CPU is paid everywhere in the process (and
//!   on the service's side of the same machine), so a stream whose decoding ran ahead on a
//!   thread of its own waits little and still reads slowly. A consumer slower than the link
//!   makes every codec read alike, and a tie keeps the codec in use;
//! * every stream of an endpoint reads in **one codec at a time**, the chooser's current
//!   one, and its rate is what one stream reads while all the others read in it too. (A
//!   codec tried by one stream among many looks better than it is: its decoding gets a
//!   thread, and the CPU it costs both ends is paid by all the streams. When they all read
//!   in it, the cost shows.)
//! * the **link** is the wire rate of one stream (uncompressed segments say it; a
//!   compressed one, a lower bound, only once those are stale);
//! * a codec is expected to read at its rate measured in the last [`FRESH`], or else at
//!   `min(link × ratio, ceiling)`, its ratio measured or assumed, the ceiling what one core
//!   compresses and decompresses per second ([`Prior`]); uncompressed reads are tried again
//!   whenever their rate is stale (they alone measure the link). When a codec is expected
//!   to beat the current one's rate, every stream is moved to it for a **trial** of at
//!   least [`TRIAL_TIME`]; the winner stays, and a loser is not tried again for a while,
//!   twice as long after each loss. Nothing changes codec without a trial: a rate measured
//!   before, under other conditions, does not compare with the current one's.
//! * no compressed codec is tried while one uncompressed request is fast ([`FAST_LINK`]):
//!   there the cores are the limit, and compression costs them on both ends;
//! * a stream changes codec at a batch boundary: it stops its body and asks for the rest in
//!   the new codec (the resume path: nothing is read twice or skipped).
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
/// The least wall time a segment takes before it is measured.
pub(super) const SEGMENT_TIME: Duration = Duration::from_millis(20);
/// How long a measured rate is trusted; older ones are estimated again (and tried anew when
/// the estimate says another codec may now be faster).
pub(super) const FRESH: Duration = Duration::from_secs(30);
/// An uncompressed request at least this fast is not limited by its link, and no compressed
/// codec is tried.
const FAST_LINK: f64 = 64e6;
/// The least a trial lasts once its codec's first segments are in.
const TRIAL_TIME: Duration = Duration::from_millis(250);
/// After a change of codec, segments ending within this are not counted: the other streams
/// are still changing over.
const SETTLE: Duration = Duration::from_millis(50);
/// A trial without a measured segment for this long is given up (its streams ended).
const TRIAL_TIMEOUT: Duration = Duration::from_secs(2);
/// A codec is tried only when expected to read this much faster than the current one.
const MARGIN: f64 = 1.1;
/// The longest a codec that lost its trials waits for the next one: [`FRESH`] times this.
const MAX_BACKOFF: u32 = 16;

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
    /// The wall time they took.
    pub time: Duration,
}

impl Segment {
    /// Whether it is long enough to be measured.
    pub fn complete(&self) -> bool {
        self.decoded >= SEGMENT_BYTES && self.time >= SEGMENT_TIME
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct Measured {
    /// Decoded bytes per second of one stream, all streams reading in this codec.
    rate: Option<f64>,
    at: Option<Instant>,
    /// Decoded bytes per wire byte.
    ratio: Option<f64>,
    unsupported: bool,
    /// Trials lost in a row, and when the next one may be.
    losses: u32,
    retry_at: Option<Instant>,
}

/// A codec every stream reads in for a while, to measure it.
#[derive(Debug, Clone, Copy)]
struct Trial {
    codec: BodyEncoding,
    /// The codec read in before (gone back to when the trial loses).
    from: BodyEncoding,
    /// When its last counted segment came in (when it started, before any).
    last: Instant,
    /// When its first counted segment came in.
    first: Option<Instant>,
    decoded: u64,
    /// The wall time of its segments (of all streams together).
    time: Duration,
}

#[derive(Debug)]
struct State {
    codecs: [Measured; 3],
    /// Wire bytes per second of one stream, and when it was last measured uncompressed.
    link: Option<f64>,
    link_plain_at: Option<Instant>,
    /// The codec every stream reads in, and since when.
    current: BodyEncoding,
    since: Option<Instant>,
    trial: Option<Trial>,
}

impl Default for State {
    fn default() -> Self {
        State {
            codecs: Default::default(),
            link: None,
            link_plain_at: None,
            current: BodyEncoding::Identity,
            since: None,
            trial: None,
        }
    }
}

/// How much stream time a running average spans.
const AVERAGE_OVER: Duration = Duration::from_millis(500);

/// A running average taking in `new`, measured over `time`.
fn ewma(old: Option<f64>, new: f64, time: Duration) -> f64 {
    match old {
        Some(o) => {
            let w = 1.0 - (-time.as_secs_f64() / AVERAGE_OVER.as_secs_f64()).exp();
            o + w * (new - o)
        }
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

impl State {
    fn fresh(&self, codec: BodyEncoding, now: Instant) -> Option<f64> {
        let m = &self.codecs[index(codec)];
        match (m.rate, m.at) {
            (Some(r), Some(at)) if now.saturating_duration_since(at) < FRESH => Some(r),
            _ => None,
        }
    }

    /// What `codec` is expected to read at: its rate when measured lately, else an
    /// estimate; none when it is not to be tried now.
    fn estimate(&self, codec: BodyEncoding, now: Instant) -> Option<f64> {
        let m = &self.codecs[index(codec)];
        let link = self.link?;
        if m.unsupported || m.retry_at.is_some_and(|at| now < at) {
            return None;
        }
        if let Some(rate) = self.fresh(codec, now) {
            return Some(rate);
        }
        if codec == BodyEncoding::Identity {
            // Only an uncompressed read measures the link (a compressed one may be held
            // back by its cores): it is tried whenever its measure is stale.
            return Some(f64::INFINITY);
        }
        if link >= FAST_LINK {
            return None;
        }
        let p = prior(codec);
        Some((link * m.ratio.unwrap_or(p.ratio)).min(p.ceiling))
    }

    fn switch(&mut self, codec: BodyEncoding, now: Instant) {
        if codec != self.current {
            self.current = codec;
            self.since = Some(now);
        }
    }

    /// Ends the trial: its codec stays if it read at least as fast as the one before.
    fn judge(&mut self, trial: Trial, rate: Option<f64>, now: Instant) {
        self.trial = None;
        let before = self.fresh(trial.from, now);
        let won = match (rate, before) {
            (Some(r), Some(b)) => r >= b,
            (Some(_), None) => true,
            (None, _) => false,
        };
        let m = &mut self.codecs[index(trial.codec)];
        if let Some(r) = rate {
            m.rate = Some(r);
            m.at = Some(now);
        }
        if won {
            m.losses = 0;
            m.retry_at = None;
        } else {
            m.losses = (m.losses + 1).min(MAX_BACKOFF.ilog2() + 1);
            let wait = FRESH * (1u32 << (m.losses - 1)).min(MAX_BACKOFF);
            m.retry_at = Some(now + wait);
            self.switch(trial.from, now);
        }
        tracing::debug!(
            codec = trial.codec.name(),
            rate = ?rate,
            before = ?before,
            won,
            "read compression trial"
        );
    }
}

impl CodecChooser {
    /// The codec the next read (or the next segment of a stream) should ask for.
    pub fn pick(&self, now: Instant) -> BodyEncoding {
        let mut st = self.state.lock();
        if let Some(trial) = st.trial {
            if now.saturating_duration_since(trial.last) >= TRIAL_TIMEOUT {
                st.judge(trial, None, now);
            }
            return st.current;
        }
        let Some(current_rate) = st.fresh(st.current, now) else {
            return st.current;
        };
        // A codec that may be faster: measured so lately (when the link was another), or
        // estimated. Only a trial says: conditions change, and a rate measured before is
        // not comparable with the current one.
        let candidate = BodyEncoding::ALL
            .iter()
            .filter(|c| **c != st.current)
            .filter_map(|&c| st.estimate(c, now).map(|r| (c, r)))
            .filter(|(_, r)| *r > current_rate * MARGIN)
            .max_by(|a, b| a.1.total_cmp(&b.1));
        if let Some((codec, _)) = candidate {
            st.trial = Some(Trial {
                codec,
                from: st.current,
                last: now,
                first: None,
                decoded: 0,
                time: Duration::ZERO,
            });
            st.switch(codec, now);
        }
        st.current
    }

    /// Takes in a measured segment read in `codec`.
    pub fn record(&self, codec: BodyEncoding, segment: Segment, now: Instant) {
        let secs = segment.time.as_secs_f64();
        if secs <= 0.0 || segment.decoded == 0 || segment.wire == 0 {
            return;
        }
        let mut st = self.state.lock();
        let rate = segment.decoded as f64 / secs;
        let wire_rate = segment.wire as f64 / secs;
        let m = &mut st.codecs[index(codec)];
        let t = segment.time;
        m.ratio = Some(ewma(
            m.ratio,
            segment.decoded as f64 / segment.wire as f64,
            t,
        ));
        // The link: an uncompressed segment says it; a compressed one (a lower bound: its
        // cores may hold it back) only once the uncompressed measure is stale.
        let plain_fresh = st
            .link_plain_at
            .is_some_and(|at| now.saturating_duration_since(at) < FRESH);
        if codec == BodyEncoding::Identity {
            st.link = Some(ewma(plain_fresh.then_some(st.link).flatten(), wire_rate, t));
            st.link_plain_at = Some(now);
        } else if !plain_fresh {
            st.link = Some(ewma(st.link, wire_rate, t));
        }
        // The rate counts only when every stream reads in this codec: not a stream that has
        // yet to change over, nor one that changed before the others.
        let settled = st
            .since
            .is_none_or(|since| now.saturating_duration_since(since) >= SETTLE);
        if codec != st.current || !settled {
            return;
        }
        match st.trial {
            Some(mut trial) if trial.codec == codec => {
                let first = *trial.first.get_or_insert(now);
                trial.last = now;
                trial.decoded += segment.decoded;
                trial.time += segment.time;
                st.trial = Some(trial);
                if now.saturating_duration_since(first) >= TRIAL_TIME {
                    let rate = trial.decoded as f64 / trial.time.as_secs_f64();
                    st.judge(trial, Some(rate), now);
                }
            }
            Some(_) => {}
            None => {
                let fresh = st.fresh(codec, now);
                let m = &mut st.codecs[index(codec)];
                m.rate = Some(ewma(fresh, rate, t));
                m.at = Some(now);
            }
        }
    }

    /// The service answered `got` to a request for `asked`: a codec it does not send is not
    /// asked for again.
    pub fn answered(&self, asked: BodyEncoding, got: BodyEncoding) {
        if asked == got {
            return;
        }
        let mut st = self.state.lock();
        st.codecs[index(asked)].unsupported = true;
        if st.trial.is_some_and(|t| t.codec == asked) {
            st.trial = None;
        }
        if st.current == asked {
            let now = Instant::now();
            st.switch(BodyEncoding::Identity, now);
        }
        tracing::debug!(
            asked = asked.name(),
            got = got.name(),
            "the service does not answer in the asked read compression; not asking again"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MB: f64 = 1e6;
    const STEP: Duration = Duration::from_millis(100);

    /// A segment of `secs` at `wire_rate` wire bytes/s compressed `ratio` times.
    fn seg(wire_rate: f64, ratio: f64, secs: f64) -> Segment {
        let wire = (wire_rate * secs) as u64;
        Segment {
            decoded: (wire as f64 * ratio) as u64,
            wire,
            time: Duration::from_secs_f64(secs),
        }
    }

    fn ratio_of(codec: BodyEncoding) -> f64 {
        match codec {
            BodyEncoding::Identity => 1.0,
            BodyEncoding::Lz4Frame => 2.0,
            BodyEncoding::Zstd => 3.3,
        }
    }

    /// Runs `streams` streams of one endpoint for `steps` steps of [`STEP`] from `t0`: each
    /// step every stream reports a segment read at `rate(codec, n)` decoded bytes/s (`n`
    /// streams reading in `codec`) and asks for its next codec. Returns the codec at the
    /// start and after every step, after checking that the streams never read in two codecs for long.
    fn simulate(
        chooser: &CodecChooser,
        t0: Instant,
        streams: usize,
        steps: u32,
        rate: impl Fn(BodyEncoding, usize) -> f64,
    ) -> Vec<BodyEncoding> {
        let mut codecs = vec![chooser.pick(t0); streams];
        let mut out = vec![codecs[0]];
        let mut mixed = 0;
        for i in 1..=steps {
            let now = t0 + STEP * i;
            let before = codecs.clone();
            for codec in codecs.iter_mut() {
                let n = before.iter().filter(|c| *c == codec).count();
                let r = ratio_of(*codec);
                chooser.record(*codec, seg(rate(*codec, n) / r, r, 0.1), now);
                *codec = chooser.pick(now);
            }
            // (A stream that asked before a trial ended changes over at its next segment.)
            mixed = if codecs.iter().all(|c| *c == codecs[0]) {
                0
            } else {
                mixed + 1
            };
            assert!(
                mixed <= 1,
                "streams in two codecs for two steps: {codecs:?}"
            );
            out.push(*codecs.last().unwrap());
        }
        out
    }

    /// One stream on a link of `link` wire bytes/s whose codecs reach at most `ceiling`
    /// decoded bytes/s: the codec it settles on, and how often it changed.
    fn settle(link: f64, lz4_ceiling: f64, zstd_ceiling: f64) -> (BodyEncoding, usize) {
        let chooser = CodecChooser::default();
        let steps = simulate(&chooser, Instant::now(), 1, 40, |c, _| {
            let ceiling = match c {
                BodyEncoding::Identity => f64::INFINITY,
                BodyEncoding::Lz4Frame => lz4_ceiling,
                BodyEncoding::Zstd => zstd_ceiling,
            };
            (link * ratio_of(c)).min(ceiling)
        });
        let changes = steps.windows(2).filter(|w| w[0] != w[1]).count();
        (*steps.last().unwrap(), changes)
    }

    #[test]
    fn a_capped_link_settles_on_the_best_ratio_a_fast_one_on_none() {
        // 10 MB/s per request: zstd triples the rows, straight from the first segment.
        assert_eq!(
            settle(10.0 * MB, 1000.0 * MB, 400.0 * MB),
            (BodyEncoding::Zstd, 1)
        );
        // Loopback at 800 MB/s per stream: compression only costs, and is not tried.
        assert_eq!(
            settle(800.0 * MB, 300.0 * MB, 120.0 * MB),
            (BodyEncoding::Identity, 0)
        );
        // 40 MB/s with a fast zstd: zstd; with a slow zstd but a fast lz4: lz4, after both
        // were tried.
        assert_eq!(
            settle(40.0 * MB, 900.0 * MB, 900.0 * MB).0,
            BodyEncoding::Zstd
        );
        assert_eq!(
            settle(40.0 * MB, 900.0 * MB, 60.0 * MB),
            (BodyEncoding::Lz4Frame, 2)
        );
    }

    #[test]
    fn a_codec_that_only_looks_fast_alone_loses_its_trial_and_waits_longer_each_time() {
        // Twelve streams on two cores at 50 MB/s each uncompressed. A stream alone in lz4 or
        // zstd reads faster (its decoding gets a core's share of its own), but when every
        // stream pays for compression on both ends, each reads far less.
        let rate = |c: BodyEncoding, n: usize| match (c, n) {
            (BodyEncoding::Identity, _) => 50.0 * MB,
            (BodyEncoding::Lz4Frame, 1) => 100.0 * MB,
            (BodyEncoding::Lz4Frame, _) => 30.0 * MB,
            (BodyEncoding::Zstd, 1) => 120.0 * MB,
            (BodyEncoding::Zstd, _) => 20.0 * MB,
        };
        let chooser = CodecChooser::default();
        // Ten minutes.
        let steps = simulate(&chooser, Instant::now(), 12, 6000, rate);
        let plain = steps
            .iter()
            .filter(|c| **c == BodyEncoding::Identity)
            .count();
        assert!(
            plain as f64 >= 0.97 * steps.len() as f64,
            "{plain} plain steps"
        );
        let trials = steps
            .windows(2)
            .filter(|w| w[0] == BodyEncoding::Identity && w[1] != w[0])
            .count();
        // Each codec at 0, 30, 90, 210, 450 s: no more than ten trials in all.
        assert!((2..=10).contains(&trials), "{trials} trials");
        assert_eq!(*steps.last().unwrap(), BodyEncoding::Identity);
    }

    #[test]
    fn when_the_cap_is_lifted_uncompressed_reads_come_back() {
        let chooser = CodecChooser::default();
        let t0 = Instant::now();
        let capped = |c: BodyEncoding, _| 10.0 * MB * ratio_of(c);
        let steps = simulate(&chooser, t0, 2, 600, capped);
        let zstd = steps.iter().filter(|c| **c == BodyEncoding::Zstd).count();
        assert!(zstd >= 570, "{zstd} of 600 steps in zstd");
        // Now 800 MB/s per stream; zstd is held to 300 MB/s by its cores.
        let fast = |c: BodyEncoding, _| match c {
            BodyEncoding::Identity => 800.0 * MB,
            BodyEncoding::Lz4Frame => 500.0 * MB,
            BodyEncoding::Zstd => 300.0 * MB,
        };
        let steps = simulate(&chooser, t0 + STEP * 600, 2, 1200, fast);
        assert_eq!(*steps.last().unwrap(), BodyEncoding::Identity);
    }

    #[test]
    fn a_trial_without_segments_is_given_up() {
        let chooser = CodecChooser::default();
        let t0 = Instant::now();
        assert_eq!(chooser.pick(t0), BodyEncoding::Identity);
        chooser.record(BodyEncoding::Identity, seg(10.0 * MB, 1.0, 0.1), t0);
        assert_eq!(chooser.pick(t0), BodyEncoding::Zstd);
        // Every stream reads in the trial's codec while it lasts.
        assert_eq!(chooser.pick(t0), BodyEncoding::Zstd);
        // No stream reported: back to none, and the next codec is tried.
        let later = t0 + TRIAL_TIMEOUT;
        assert_eq!(chooser.pick(later), BodyEncoding::Identity);
        assert_eq!(chooser.pick(later), BodyEncoding::Lz4Frame);
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
