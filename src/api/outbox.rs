//! Bounded output of an API connection that cannot be written at once: a large `list_flows`
//! reply, or the event stream of a `watch_flows` subscriber.
//!
//! # Theory of operation
//!
//! An [`Outbox`] holds bytes not yet accepted by the non-blocking socket, up to its limit.
//! [`Outbox::push`] refuses bytes beyond the limit (the server then drops the client: a
//! subscriber that does not read loses its subscription, never stalls tapir), and
//! [`Outbox::flush`] writes until the socket would block. Pure apart from the `Write` it is
//! given, so it is tested with an in-memory writer.

use std::io::{self, Write};

/// Pending output of one connection. See the module documentation.
#[derive(Debug)]
pub struct Outbox {
    buf: Vec<u8>,
    /// Bytes of `buf` already written.
    pos: usize,
    limit: usize,
}

impl Outbox {
    /// An empty outbox holding at most `limit` unwritten bytes.
    pub fn new(limit: usize) -> Self {
        Outbox {
            buf: Vec::new(),
            pos: 0,
            limit,
        }
    }

    /// Unwritten bytes.
    pub fn pending(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// Queue `bytes`; false (nothing queued) if they would pass the limit.
    pub fn push(&mut self, bytes: &[u8]) -> bool {
        if self.pending() + bytes.len() > self.limit {
            return false;
        }
        if self.pos > 0 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        self.buf.extend_from_slice(bytes);
        true
    }

    /// Write until done or the writer would block. Ok(true) when everything was written.
    pub fn flush(&mut self, w: &mut impl Write) -> io::Result<bool> {
        while self.pos < self.buf.len() {
            match w.write(&self.buf[self.pos..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.pos += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.buf.clear();
        self.pos = 0;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Accepts `room` bytes, then would block.
    struct Pipe {
        got: Vec<u8>,
        room: usize,
    }

    impl Write for Pipe {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            if self.room == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let n = b.len().min(self.room);
            self.room -= n;
            self.got.extend_from_slice(&b[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn partial_writes_and_limit() {
        let mut o = Outbox::new(10);
        let mut p = Pipe {
            got: Vec::new(),
            room: 4,
        };
        assert!(o.push(b"hello"));
        assert!(!o.flush(&mut p).unwrap());
        assert_eq!(o.pending(), 1);
        assert!(o.push(b"world!!!!"));
        assert!(!o.push(b"x"), "limit reached");
        p.room = 100;
        assert!(o.flush(&mut p).unwrap());
        assert_eq!(p.got, b"helloworld!!!!");
        assert_eq!(o.pending(), 0);
        assert!(o.push(b"0123456789"));
    }
}
