//! Sockets: where to connect, and the boxed byte stream (plain or TLS) a connection runs on.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpStream, UnixStream};

use crate::Error;

/// Where the server listens.
#[derive(Clone, PartialEq, Eq)]
pub enum Address {
    /// TCP host (name or IP literal) and port; NBD's port is 10809.
    Tcp {
        /// Host name or IP address.
        host: String,
        /// Port.
        port: u16,
    },
    /// A Unix domain socket.
    Unix(PathBuf),
}

impl Address {
    /// A TCP address.
    pub fn tcp(host: impl Into<String>, port: u16) -> Self {
        Self::Tcp {
            host: host.into(),
            port,
        }
    }

    /// A Unix socket address.
    pub fn unix(path: impl Into<PathBuf>) -> Self {
        Self::Unix(path.into())
    }
}

impl fmt::Debug for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Tcp { host, port } if host.contains(':') => write!(f, "[{host}]:{port}"),
            Self::Tcp { host, port } => write!(f, "{host}:{port}"),
            Self::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

/// Any bidirectional byte stream a connection can run on (TCP, Unix, TLS, in-memory duplex).
pub trait ByteStream: AsyncRead + AsyncWrite + Send + Unpin + 'static {}

impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> ByteStream for T {}

/// A boxed [`ByteStream`].
pub type BoxStream = Box<dyn ByteStream>;

/// Opens a socket to `address` within `timeout`.
pub(crate) async fn connect(address: &Address, timeout: Duration) -> Result<BoxStream, Error> {
    let connecting = async {
        match address {
            Address::Tcp { host, port } => {
                let stream = TcpStream::connect((host.as_str(), *port))
                    .await
                    .map_err(Error::io("connecting"))?;
                // Request headers are tiny; waiting to coalesce them only adds latency.
                stream
                    .set_nodelay(true)
                    .map_err(Error::io("setting TCP_NODELAY"))?;
                Ok::<BoxStream, Error>(Box::new(stream))
            }
            Address::Unix(path) => {
                let stream = UnixStream::connect(path)
                    .await
                    .map_err(Error::io("connecting"))?;
                Ok::<BoxStream, Error>(Box::new(stream))
            }
        }
    };
    tokio::time::timeout(timeout, connecting)
        .await
        .map_err(|_| Error::Timeout {
            what: "connect",
            after: timeout,
        })?
}
