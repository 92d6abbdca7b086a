//! The gRPC port's connections, as HTTP/2 should write to them.
//!
//! h2 copies a DATA frame into its write buffer only when the frame is
//! smaller than a threshold: 256 bytes on a connection that takes vectored
//! writes (a TCP socket), 1,024 on one that does not. A larger frame is sent
//! as its own slice, and nothing else joins the buffer until that write is
//! done, so every such answer costs a `writev` of its own. VerifyApiKey's
//! answer for a key with permissions and Check's allowed answer are 300 to
//! 700 bytes: measured with h2load, a restricted key took 1.8 `writev`
//! calls per call against 0.8 for a plain key's 150-byte answer, and most of
//! its extra CPU was the kernel's. Saying these sockets take no vectored
//! writes moves the threshold to 1,024 bytes, so answers up to that size are
//! copied (a few hundred bytes) and leave together; one above it takes two
//! writes instead of one `writev`.

use std::io::IoSlice;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tonic::transport::server::{Connected, TcpConnectInfo};

/// A TCP connection that reports no vectored writes (see the module doc).
pub struct CopiedWrites(pub TcpStream);

impl Connected for CopiedWrites {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.0.connect_info()
    }
}

impl AsyncRead for CopiedWrites {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for CopiedWrites {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    /// Kept for callers that ask regardless; h2 does not, once
    /// [`Self::is_write_vectored`] says no.
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        false
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}
