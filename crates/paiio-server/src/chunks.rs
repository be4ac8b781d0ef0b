//! Answer bodies on the wire: the data frames a body has ready together go out as one.
//!
//! hyper writes every data frame of a chunked body as an HTTP chunk of its own, and a row
//! stream's encoder yields each Arrow buffer of a message as a frame (tens of kilobytes), so
//! a client would read a message chunk by chunk, one call each. [`Grouped`] hands hyper the
//! frames that are ready at once as one frame of several segments ([`Segments`]): a
//! message is one chunk, nothing is copied (hyper writes the segments with one `writev`),
//! and a body whose producer is slower than the socket is sent as before, frame by frame.

use std::collections::VecDeque;
use std::io::IoSlice;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use hyper::body::{Body, Frame, SizeHint};

/// At most this many bytes in one frame: a producer that is always ready is still sent in
/// steps (and its memory freed as it goes) rather than gathered whole.
pub(crate) const MAX_GROUP_BYTES: usize = 4 << 20;

/// Bytes of several frames, sent as one.
#[derive(Debug, Default)]
pub(crate) struct Segments {
    parts: VecDeque<Bytes>,
    remaining: usize,
}

impl Segments {
    fn push(&mut self, bytes: Bytes) {
        if !bytes.is_empty() {
            self.remaining += bytes.len();
            self.parts.push_back(bytes);
        }
    }
}

impl Buf for Segments {
    fn remaining(&self) -> usize {
        self.remaining
    }

    fn chunk(&self) -> &[u8] {
        self.parts.front().map_or(&[], |b| b.as_ref())
    }

    fn advance(&mut self, mut cnt: usize) {
        assert!(
            cnt <= self.remaining,
            "advance past the end of the segments"
        );
        while cnt > 0 {
            let Some(front) = self.parts.front_mut() else {
                break;
            };
            if cnt < front.len() {
                front.advance(cnt);
                self.remaining -= cnt;
                return;
            }
            cnt -= front.len();
            self.remaining -= front.len();
            self.parts.pop_front();
        }
    }

    fn chunks_vectored<'a>(&'a self, dst: &mut [IoSlice<'a>]) -> usize {
        let mut n = 0;
        for (slot, part) in dst.iter_mut().zip(&self.parts) {
            *slot = IoSlice::new(part);
            n += 1;
        }
        n
    }
}

/// A body whose ready data frames are sent as one (see the module doc). Trailers and errors
/// come after the data before them, as in the inner body.
pub(crate) struct Grouped<B: Body> {
    inner: B,
    /// What the inner body gave after data that was already gathered: sent next.
    held: Option<Result<Frame<Bytes>, B::Error>>,
    ended: bool,
}

impl<B: Body> Grouped<B> {
    pub(crate) fn new(inner: B) -> Self {
        Grouped {
            inner,
            held: None,
            ended: false,
        }
    }
}

impl<B> Body for Grouped<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Unpin,
{
    type Data = Segments;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Segments>, B::Error>>> {
        let this = self.get_mut();
        let mut group = Segments::default();
        while group.remaining < MAX_GROUP_BYTES {
            let next = match this.held.take() {
                Some(held) => Poll::Ready(Some(held)),
                None if this.ended => Poll::Ready(None),
                None => Pin::new(&mut this.inner).poll_frame(cx),
            };
            match next {
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => group.push(data),
                    Err(frame) if group.remaining == 0 => {
                        let trailers = frame.into_trailers().unwrap_or_default();
                        return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
                    }
                    Err(frame) => {
                        this.held = Some(Ok(frame));
                        break;
                    }
                },
                Poll::Ready(Some(Err(e))) if group.remaining == 0 => {
                    return Poll::Ready(Some(Err(e)));
                }
                Poll::Ready(Some(Err(e))) => {
                    this.held = Some(Err(e));
                    break;
                }
                Poll::Ready(None) => {
                    this.ended = true;
                    if group.remaining == 0 {
                        return Poll::Ready(None);
                    }
                    break;
                }
                Poll::Pending if group.remaining == 0 => return Poll::Pending,
                Poll::Pending => break,
            }
        }
        Poll::Ready(Some(Ok(Frame::data(group))))
    }

    fn is_end_stream(&self) -> bool {
        self.held.is_none() && (self.ended || self.inner.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        if self.ended {
            SizeHint::with_exact(0)
        } else {
            self.inner.size_hint()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, StreamBody};

    type Item = Result<Frame<Bytes>, std::io::Error>;

    fn frames(
        grouped: Grouped<StreamBody<futures::stream::Iter<std::vec::IntoIter<Item>>>>,
    ) -> Vec<Result<Vec<u8>, String>> {
        futures::executor::block_on(async move {
            let mut body = grouped;
            let mut out = Vec::new();
            while let Some(frame) = body.frame().await {
                out.push(match frame {
                    Ok(f) if f.is_data() => {
                        let mut data = f.into_data().unwrap();
                        Ok(data.copy_to_bytes(data.remaining()).to_vec())
                    }
                    Ok(_) => Err("trailers".to_string()),
                    Err(e) => {
                        // hyper stops at an error, as this does.
                        out.push(Err(e.to_string()));
                        break;
                    }
                });
            }
            out
        })
    }

    fn body(
        items: Vec<Item>,
    ) -> Grouped<StreamBody<futures::stream::Iter<std::vec::IntoIter<Item>>>> {
        Grouped::new(StreamBody::new(futures::stream::iter(items)))
    }

    fn data(b: &'static [u8]) -> Item {
        Ok(Frame::data(Bytes::from_static(b)))
    }

    #[test]
    fn ready_frames_go_as_one_and_keep_their_order() {
        let got = frames(body(vec![data(b"ab"), data(b""), data(b"cde"), data(b"f")]));
        assert_eq!(got, vec![Ok(b"abcdef".to_vec())]);
    }

    #[test]
    fn an_error_or_trailers_come_after_the_data_before_them() {
        let err: Item = Err(std::io::Error::other("cut"));
        let got = frames(body(vec![data(b"ab"), err, data(b"never")]));
        assert_eq!(got, vec![Ok(b"ab".to_vec()), Err("cut".to_string())]);
        let trailers: Item = Ok(Frame::trailers(Default::default()));
        let got = frames(body(vec![data(b"ab"), trailers, data(b"cd")]));
        assert_eq!(
            got,
            vec![
                Ok(b"ab".to_vec()),
                Err("trailers".to_string()),
                Ok(b"cd".to_vec())
            ]
        );
    }

    #[test]
    fn a_group_is_bounded() {
        static BIG: [u8; MAX_GROUP_BYTES / 2] = [7; MAX_GROUP_BYTES / 2];
        let got = frames(body(vec![data(&BIG), data(&BIG), data(&BIG)]));
        let sizes: Vec<usize> = got.iter().map(|f| f.as_ref().unwrap().len()).collect();
        assert_eq!(sizes, vec![MAX_GROUP_BYTES, MAX_GROUP_BYTES / 2]);
    }

    #[test]
    fn segments_write_as_slices_and_advance_across_them() {
        let mut s = Segments::default();
        for part in [&b"abc"[..], b"", b"de", b"fghi"] {
            s.push(Bytes::from_static(part));
        }
        assert_eq!(s.remaining(), 9);
        let mut slices = [IoSlice::new(&[]); 8];
        assert_eq!(s.chunks_vectored(&mut slices), 3);
        assert_eq!(&*slices[1], b"de");
        let mut one = [IoSlice::new(&[]); 1];
        assert_eq!(s.chunks_vectored(&mut one), 1);
        s.advance(4);
        assert_eq!((s.remaining(), s.chunk()), (5, &b"e"[..]));
        s.advance(1);
        assert_eq!(s.chunk(), b"fghi");
        s.advance(4);
        assert_eq!((s.remaining(), s.chunk()), (0, &b""[..]));
    }
}
