//! Machine logs: every line a machine writes to stdout or stderr, with the time it was
//! written, kept as NDJSON in the machine's log file and bounded in size.
//!
//! The writer side runs in the process that holds the machine's output pipes (the
//! shim), so logging goes on while the server is down. The reader side serves `hangar
//! logs`: the retained lines, then whatever is appended (following across rotation).
//! This module knows files and lines; which machines to read is the server's business.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

/// Size at which the log file is rotated; one rotated file is kept, so a machine's logs
/// take at most twice this.
pub const MAX_LOG_FILE_BYTES: u64 = 8 << 20;
/// Longest message kept in one line; longer output is split.
pub const MAX_LINE_BYTES: usize = 16 << 10;

/// One line of a machine's output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLine {
    /// RFC 3339 with nanoseconds, UTC.
    pub timestamp: String,
    /// `stdout` or `stderr`.
    pub stream: String,
    pub message: String,
}

/// Appends lines to a log file, rotating it to `<file>.1` past `max_bytes`.
pub struct LogWriter {
    path: PathBuf,
    max_bytes: u64,
    file: Mutex<File>,
}

fn rotated(path: &Path) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(".1");
    PathBuf::from(p)
}

fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

impl LogWriter {
    pub fn open(path: PathBuf, max_bytes: u64) -> io::Result<LogWriter> {
        let file = open_append(&path)?;
        Ok(LogWriter {
            path,
            max_bytes,
            file: Mutex::new(file),
        })
    }

    /// Writes one line, stamped now.
    pub fn write(&self, stream: &str, message: &str) -> io::Result<()> {
        let line = LogLine {
            timestamp: humantime::format_rfc3339_nanos(SystemTime::now()).to_string(),
            stream: stream.to_string(),
            message: message.to_string(),
        };
        let mut bytes = serde_json::to_vec(&line).map_err(io::Error::other)?;
        bytes.push(b'\n');
        let mut file = self.file.lock().unwrap_or_else(|p| p.into_inner());
        if file.metadata()?.len() + bytes.len() as u64 > self.max_bytes {
            fs::rename(&self.path, rotated(&self.path))?;
            *file = open_append(&self.path)?;
        }
        file.write_all(&bytes)
    }
}

/// Copies `reader` into `writer` line by line until end of input; lines longer than
/// [`MAX_LINE_BYTES`] are split, invalid UTF-8 is replaced.
pub fn pump(reader: impl Read, stream: &str, writer: &LogWriter) {
    let mut reader = BufReader::with_capacity(MAX_LINE_BYTES, reader);
    let mut line = Vec::with_capacity(256);
    loop {
        let chunk = match reader.fill_buf() {
            Ok([]) | Err(_) => break,
            Ok(c) => c,
        };
        let (used, done) = match chunk.iter().position(|b| *b == b'\n') {
            Some(i) => (i + 1, true),
            None => (chunk.len(), false),
        };
        line.extend_from_slice(&chunk[..used]);
        reader.consume(used);
        if done || line.len() >= MAX_LINE_BYTES {
            emit(&mut line, stream, writer);
        }
    }
    if !line.is_empty() {
        emit(&mut line, stream, writer);
    }
}

fn emit(line: &mut Vec<u8>, stream: &str, writer: &LogWriter) {
    let text = String::from_utf8_lossy(line);
    let text = text.strip_suffix('\n').unwrap_or(&text);
    let text = text.strip_suffix('\r').unwrap_or(text);
    let _ = writer.write(stream, text);
    line.clear();
}

/// Where a reader is in a log file: which file (inode) and how far.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogCursor {
    inode: u64,
    offset: u64,
}

fn parse_lines(bytes: &[u8]) -> Vec<LogLine> {
    bytes
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .filter_map(|l| serde_json::from_slice(l).ok())
        .collect()
}

/// Reads `path` from `offset` up to its last complete line; returns the lines and the
/// offset after them.
fn read_from(path: &Path, offset: u64) -> io::Result<(Vec<LogLine>, u64)> {
    let mut f = File::open(path)?;
    f.seek(SeekFrom::Start(offset))?;
    let mut buf = Vec::new();
    f.read_to_end(&mut buf)?;
    let complete = buf.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
    Ok((parse_lines(&buf[..complete]), offset + complete as u64))
}

/// Every retained line (rotated file first), and a cursor at the end.
pub fn read_all(path: &Path) -> (Vec<LogLine>, Option<LogCursor>) {
    let mut lines = read_from(&rotated(path), 0)
        .map(|r| r.0)
        .unwrap_or_default();
    match (read_from(path, 0), fs::metadata(path)) {
        (Ok((more, offset)), Ok(meta)) => {
            lines.extend(more);
            (
                lines,
                Some(LogCursor {
                    inode: meta.ino(),
                    offset,
                }),
            )
        }
        _ => (lines, None),
    }
}

/// Lines appended since `cursor`, following a rotation; advances the cursor.
pub fn read_new(path: &Path, cursor: &mut Option<LogCursor>) -> Vec<LogLine> {
    let Ok(meta) = fs::metadata(path) else {
        return Vec::new();
    };
    let mut lines = Vec::new();
    let mut offset = 0;
    if let Some(c) = *cursor {
        if c.inode == meta.ino() {
            offset = c.offset;
        } else if let Ok(old) = fs::metadata(rotated(path)) {
            // Rotated since the last read: finish the old file first.
            if old.ino() == c.inode {
                if let Ok((rest, _)) = read_from(&rotated(path), c.offset) {
                    lines.extend(rest);
                }
            }
        }
    }
    if let Ok((more, end)) = read_from(path, offset) {
        lines.extend(more);
        *cursor = Some(LogCursor {
            inode: meta.ino(),
            offset: end,
        });
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_stamped_and_split() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("machine.log");
        let w = LogWriter::open(path.clone(), 1 << 20).unwrap();
        pump(&b"one\ntwo\r\npartial"[..], "stdout", &w);
        let (lines, mut cursor) = read_all(&path);
        let messages: Vec<&str> = lines.iter().map(|l| l.message.as_str()).collect();
        assert_eq!(messages, ["one", "two", "partial"]);
        assert!(lines[0].timestamp.ends_with('Z'));
        assert_eq!(lines[0].stream, "stdout");

        let long = vec![b'x'; MAX_LINE_BYTES + 10];
        pump(&long[..], "stderr", &w);
        let new = read_new(&path, &mut cursor);
        assert_eq!(new.len(), 2, "a long line is split");
        assert_eq!(new[0].message.len(), MAX_LINE_BYTES);
        assert!(read_new(&path, &mut cursor).is_empty());
    }

    #[test]
    fn rotation_bounds_size_and_followers_miss_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("machine.log");
        let w = LogWriter::open(path.clone(), 4096).unwrap();
        w.write("stdout", "first").unwrap();
        let (_, mut cursor) = read_all(&path);
        for i in 0..60 {
            w.write("stdout", &format!("line {i}")).unwrap();
        }
        let after = read_new(&path, &mut cursor);
        assert_eq!(after.len(), 60, "every line once across the rotation");
        assert_eq!(after[59].message, "line 59");
        assert!(rotated(&path).exists());
        for i in 0..1000 {
            w.write("stdout", &format!("more {i}")).unwrap();
        }
        let total =
            fs::metadata(&path).unwrap().len() + fs::metadata(rotated(&path)).unwrap().len();
        assert!(total <= 2 * 4096, "bounded: {total}");
        let (kept, _) = read_all(&path);
        assert_eq!(kept.last().unwrap().message, "more 999");
    }
}
