//! The byte format of a console session (`hangar ssh console`): once the request is
//! upgraded, both sides send frames of one kind byte, a 4-byte big-endian length and
//! that many bytes of payload. The user's side sends what is typed, window sizes and
//! the end of its input; the machine's side sends output and, last, the command's
//! exit status (or why it could not run). Only the framing lives here; who reads and
//! writes the frames is the agent's and the CLI's business.

/// The most payload one frame may carry.
pub const MAX_PAYLOAD: usize = 1 << 20;

/// One message of a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// Bytes for the command's standard input (from the user).
    Stdin(Vec<u8>),
    /// The user's input has ended.
    StdinClosed,
    /// The user's terminal is now this big.
    Resize { rows: u16, cols: u16 },
    /// Bytes the command wrote to its standard output (or its terminal).
    Stdout(Vec<u8>),
    /// Bytes the command wrote to its standard error (sessions without a terminal).
    Stderr(Vec<u8>),
    /// The command ended with this status (128 + N for a signal N); the last frame.
    Exit(i32),
    /// The session failed: why, for the user; the last frame.
    Failed(String),
}

/// A frame that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("unknown console frame kind {0}")]
    Kind(u8),
    #[error("console frame of {0} bytes is larger than the {MAX_PAYLOAD}-byte limit")]
    TooLarge(usize),
    #[error("console frame of kind {0} is malformed")]
    Malformed(u8),
}

impl Frame {
    fn kind(&self) -> u8 {
        match self {
            Frame::Stdin(_) => 0,
            Frame::StdinClosed => 1,
            Frame::Resize { .. } => 2,
            Frame::Stdout(_) => 3,
            Frame::Stderr(_) => 4,
            Frame::Exit(_) => 5,
            Frame::Failed(_) => 6,
        }
    }

    /// The frame as bytes on the wire.
    pub fn encode(&self) -> Vec<u8> {
        let payload: Vec<u8> = match self {
            Frame::Stdin(b) | Frame::Stdout(b) | Frame::Stderr(b) => b.clone(),
            Frame::StdinClosed => Vec::new(),
            Frame::Resize { rows, cols } => [rows.to_be_bytes(), cols.to_be_bytes()].concat(),
            Frame::Exit(code) => code.to_be_bytes().to_vec(),
            Frame::Failed(why) => why.as_bytes().to_vec(),
        };
        let mut out = Vec::with_capacity(5 + payload.len());
        out.push(self.kind());
        out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        out.extend_from_slice(&payload);
        out
    }

    fn decode(kind: u8, payload: &[u8]) -> Result<Frame, FrameError> {
        let exact = |n: usize| {
            if payload.len() == n {
                Ok(())
            } else {
                Err(FrameError::Malformed(kind))
            }
        };
        Ok(match kind {
            0 => Frame::Stdin(payload.to_vec()),
            1 => Frame::StdinClosed,
            2 => {
                exact(4)?;
                Frame::Resize {
                    rows: u16::from_be_bytes([payload[0], payload[1]]),
                    cols: u16::from_be_bytes([payload[2], payload[3]]),
                }
            }
            3 => Frame::Stdout(payload.to_vec()),
            4 => Frame::Stderr(payload.to_vec()),
            5 => {
                exact(4)?;
                Frame::Exit(i32::from_be_bytes([
                    payload[0], payload[1], payload[2], payload[3],
                ]))
            }
            6 => Frame::Failed(String::from_utf8_lossy(payload).into_owned()),
            k => return Err(FrameError::Kind(k)),
        })
    }
}

/// Reads frames out of bytes as they arrive, in whatever pieces.
#[derive(Debug, Default)]
pub struct FrameReader {
    buf: Vec<u8>,
}

impl FrameReader {
    /// Adds bytes read from the connection.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next whole frame, if the bytes so far hold one.
    pub fn next_frame(&mut self) -> Option<Result<Frame, FrameError>> {
        if self.buf.len() < 5 {
            return None;
        }
        let kind = self.buf[0];
        let len = u32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]) as usize;
        if len > MAX_PAYLOAD {
            return Some(Err(FrameError::TooLarge(len)));
        }
        if self.buf.len() < 5 + len {
            return None;
        }
        let frame = Frame::decode(kind, &self.buf[5..5 + len]);
        self.buf.drain(..5 + len);
        Some(frame)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_survive_the_wire_in_any_pieces() {
        let frames = vec![
            Frame::Stdin(b"ls -l\n".to_vec()),
            Frame::Resize {
                rows: 40,
                cols: 120,
            },
            Frame::StdinClosed,
            Frame::Stdout(vec![0xff; 70_000]),
            Frame::Stderr(b"oops".to_vec()),
            Frame::Failed("no such machine".into()),
            Frame::Exit(-1),
        ];
        let wire: Vec<u8> = frames.iter().flat_map(Frame::encode).collect();
        for piece in [1, 3, 4096, wire.len()] {
            let mut r = FrameReader::default();
            let mut got = Vec::new();
            for chunk in wire.chunks(piece) {
                r.push(chunk);
                while let Some(f) = r.next_frame() {
                    got.push(f.unwrap());
                }
            }
            assert_eq!(got, frames, "in pieces of {piece}");
        }
    }

    #[test]
    fn bad_frames_are_refused() {
        let mut r = FrameReader::default();
        r.push(&[9, 0, 0, 0, 0]);
        assert_eq!(r.next_frame(), Some(Err(FrameError::Kind(9))));
        let mut r = FrameReader::default();
        r.push(&[2, 0, 0, 0, 1, 7]);
        assert_eq!(r.next_frame(), Some(Err(FrameError::Malformed(2))));
        let mut r = FrameReader::default();
        r.push(&[3, 0xff, 0xff, 0xff, 0xff]);
        assert!(matches!(r.next_frame(), Some(Err(FrameError::TooLarge(_)))));
    }
}
