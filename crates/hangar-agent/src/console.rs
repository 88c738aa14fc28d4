//! A console session carried over one byte stream: the driver's [`Console`] (the
//! command's input, output and control) turned into the frames of
//! [`hangar_types::console`], so the control plane can pass the stream to the user
//! untouched. What the user types goes to the command, window sizes to its terminal;
//! its output comes back as it is written and, once it has all been sent, its exit
//! status. A user who goes away ends the command.

use hangar_runtime::console::{Console, ConsoleReader};
use hangar_types::console::{Frame, FrameReader};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::tunnel::Tunnel;

/// How much is read from the command in one go (one frame at most).
const CHUNK: usize = 32 * 1024;

/// How long the stream stays open for the user's last frames once the command's
/// status has been sent, so what they still send has somewhere to go and the end of
/// the session reaches them whole.
const LINGER: std::time::Duration = std::time::Duration::from_secs(10);

/// The session as a stream of frames; it runs until the command ends or the other
/// side of the stream goes away.
pub fn framed(console: Console) -> Tunnel {
    let (ours, theirs) = tokio::io::duplex(256 * 1024);
    tokio::spawn(pump(console, ours));
    Box::new(theirs)
}

/// Sends what `from` gives as frames made by `frame`, until it ends.
async fn forward(mut from: ConsoleReader, frame: fn(Vec<u8>) -> Frame, out: mpsc::Sender<Frame>) {
    let mut buf = vec![0u8; CHUNK];
    loop {
        match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if out.send(frame(buf[..n].to_vec())).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// Reads the user's frames: input to the command, sizes to its terminal. Returns when
/// the user's side ends (or sends nonsense).
async fn from_user(
    user: &mut (impl AsyncRead + Unpin),
    mut stdin: Option<hangar_runtime::console::ConsoleWriter>,
    control: &dyn hangar_runtime::console::ConsoleControl,
) {
    let mut reader = FrameReader::default();
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = match user.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        reader.push(&buf[..n]);
        while let Some(frame) = reader.next_frame() {
            match frame {
                Ok(Frame::Stdin(bytes)) => {
                    if let Some(w) = stdin.as_mut() {
                        if w.write_all(&bytes).await.is_err() || w.flush().await.is_err() {
                            stdin = None;
                        }
                    }
                }
                Ok(Frame::StdinClosed) => {
                    if let Some(mut w) = stdin.take() {
                        let _ = w.shutdown().await;
                        drop(w);
                        control.close_stdin().await;
                    }
                }
                Ok(Frame::Resize { rows, cols }) => {
                    let _ = control.resize(rows, cols).await;
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::debug!(error = %e, "console session sent a bad frame");
                    return;
                }
            }
        }
    }
}

async fn pump(console: Console, stream: tokio::io::DuplexStream) {
    let (mut user_in, mut user_out) = tokio::io::split(stream);
    let Console {
        stdin,
        stdout,
        stderr,
        control,
    } = console;
    let (tx, mut rx) = mpsc::channel::<Frame>(16);
    let outputs = {
        let tx = tx.clone();
        async move {
            let out = forward(stdout, Frame::Stdout, tx.clone());
            match stderr {
                Some(err) => {
                    tokio::join!(out, forward(err, Frame::Stderr, tx));
                }
                None => out.await,
            }
        }
    };
    drop(tx);
    let writer = async {
        while let Some(frame) = rx.recv().await {
            if user_out.write_all(&frame.encode()).await.is_err() {
                return false;
            }
        }
        true
    };
    // The command's output, all of it, then its status; or the user leaves first.
    let finished = async {
        let (_, delivered) = tokio::join!(outputs, writer);
        delivered
    };
    let ended = tokio::select! {
        delivered = finished => delivered,
        _ = from_user(&mut user_in, Some(stdin), control.as_ref()) => false,
    };
    if ended {
        let last = match control.wait().await {
            Ok(code) => Frame::Exit(code),
            Err(e) => Frame::Failed(e.to_string()),
        };
        let _ = user_out.write_all(&last.encode()).await;
        let _ = user_out.shutdown().await;
        control.close().await;
        // A user whose input (say, the end of stdin) crosses the status on the way
        // must not find the stream gone: a write that fails there would end the
        // whole connection before the status reached them.
        let drained = async {
            let mut buf = vec![0u8; CHUNK];
            while matches!(user_in.read(&mut buf).await, Ok(n) if n > 0) {}
        };
        let _ = tokio::time::timeout(LINGER, drained).await;
    } else {
        control.close().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hangar_runtime::console::ConsoleControl;
    use hangar_runtime::DriverError;

    /// A command that has already ended with status 1, having written nothing.
    struct Ended;

    #[async_trait::async_trait]
    impl ConsoleControl for Ended {
        async fn resize(&self, _: u16, _: u16) -> Result<(), DriverError> {
            Ok(())
        }
        async fn wait(&self) -> Result<i32, DriverError> {
            Ok(1)
        }
        async fn close(&self) {}
    }

    #[tokio::test]
    async fn input_crossing_the_status_still_gets_the_status() {
        let console = Console {
            stdin: Box::new(tokio::io::sink()),
            stdout: Box::new(tokio::io::empty()),
            stderr: Some(Box::new(tokio::io::empty())),
            control: Box::new(Ended),
        };
        let mut session = framed(console);
        // The command is long gone when the user's end of input arrives.
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        session
            .write_all(&Frame::StdinClosed.encode())
            .await
            .expect("the stream still takes the user's frames");
        let mut got = Vec::new();
        session.read_to_end(&mut got).await.unwrap();
        let mut reader = FrameReader::default();
        reader.push(&got);
        let last = std::iter::from_fn(|| reader.next_frame()).last();
        assert!(matches!(last, Some(Ok(Frame::Exit(1)))), "{last:?}");
    }
}
