//! The control channel: a Unix `SOCK_SEQPACKET` socket pair. Each message
//! arrives whole, with the segment descriptors sent along with it
//! (`SCM_RIGHTS`). When one side's process ends, however it ends, the other
//! side reads end-of-file: that is how a dead worker or a dead caller is
//! noticed at once.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

/// Largest message: descriptors of a few thousand tensors, or an error
/// with its traceback (longer texts are cut by the sender).
pub const MAX_MESSAGE: usize = 192 << 10;
/// Most descriptors one message carries (the kernel's SCM_MAX_FD).
pub const MAX_FDS: usize = 253;

/// One end of the channel.
#[derive(Debug)]
pub struct Channel {
    fd: OwnedFd,
}

/// What a receive got.
#[derive(Debug)]
pub enum Received {
    /// A message of this many bytes (in the buffer), with its descriptors.
    Message(usize, Vec<OwnedFd>),
    /// The other end is closed: its process has ended or let go.
    Closed,
    /// Nothing arrived in time.
    TimedOut,
}

impl Channel {
    /// A connected pair. Both ends are close-on-exec; the worker's end is
    /// given to it explicitly.
    pub fn pair() -> io::Result<(Channel, Channel)> {
        let mut fds = [0 as RawFd; 2];
        // SAFETY: socketpair fills two descriptors.
        let rc = unsafe {
            libc::socketpair(
                libc::AF_UNIX,
                libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
                0,
                fds.as_mut_ptr(),
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fresh descriptors we own.
        let (a, b) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        for fd in [&a, &b] {
            set_buffer_sizes(fd)?;
        }
        Ok((Channel { fd: a }, Channel { fd: b }))
    }

    /// Wraps a descriptor inherited from the caller (the worker's end).
    pub fn from_fd(fd: OwnedFd) -> Channel {
        Channel { fd }
    }

    /// Sends one message with descriptors.
    pub fn send(&self, bytes: &[u8], fds: &[BorrowedFd<'_>]) -> io::Result<()> {
        if bytes.len() > MAX_MESSAGE || fds.len() > MAX_FDS {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "message of {} bytes and {} descriptors is over the channel's limit",
                    bytes.len(),
                    fds.len()
                ),
            ));
        }
        let mut iov = libc::iovec {
            iov_base: bytes.as_ptr() as *mut libc::c_void,
            iov_len: bytes.len(),
        };
        let raw: Vec<RawFd> = fds.iter().map(|f| f.as_raw_fd()).collect();
        let fd_bytes = std::mem::size_of_val(raw.as_slice());
        // SAFETY: CMSG_SPACE is arithmetic.
        let space = unsafe { libc::CMSG_SPACE(fd_bytes as u32) } as usize;
        let mut control = vec![0u64; space.div_ceil(8)];
        // SAFETY: msghdr is plain data; zeroed is a valid start.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        if !raw.is_empty() {
            msg.msg_control = control.as_mut_ptr() as *mut libc::c_void;
            msg.msg_controllen = space as _;
            // SAFETY: the control buffer has room for one header and the fds.
            unsafe {
                let header = libc::CMSG_FIRSTHDR(&msg);
                (*header).cmsg_level = libc::SOL_SOCKET;
                (*header).cmsg_type = libc::SCM_RIGHTS;
                (*header).cmsg_len = libc::CMSG_LEN(fd_bytes as u32) as _;
                std::ptr::copy_nonoverlapping(
                    raw.as_ptr(),
                    libc::CMSG_DATA(header) as *mut RawFd,
                    raw.len(),
                );
            }
        }
        loop {
            // SAFETY: msg points at live buffers. MSG_NOSIGNAL: a closed
            // peer is an error here, not SIGPIPE.
            let sent = unsafe { libc::sendmsg(self.fd.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) };
            if sent >= 0 {
                return Ok(());
            }
            let err = io::Error::last_os_error();
            if err.kind() != io::ErrorKind::Interrupted {
                return Err(err);
            }
        }
    }

    /// Waits up to `timeout` (forever if None) for a message, and receives
    /// it into `buf` (resized to [`MAX_MESSAGE`]).
    ///
    /// For the first `spin` of the wait it polls without sleeping: waking a
    /// sleeping thread in another process costs tens of microseconds on a
    /// virtual machine, more than the rest of a small call together.
    pub fn recv(
        &self,
        buf: &mut Vec<u8>,
        spin: Duration,
        timeout: Option<Duration>,
    ) -> io::Result<Received> {
        if !spin.is_zero() {
            let start = std::time::Instant::now();
            loop {
                if let Some(received) = self.recv_now(buf, libc::MSG_DONTWAIT)? {
                    return Ok(received);
                }
                if start.elapsed() >= spin {
                    break;
                }
                // On a busy machine the other side may need this very core
                // to answer: let it run.
                // SAFETY: no arguments.
                unsafe { libc::sched_yield() };
            }
        }
        if !self.wait_readable(timeout)? {
            return Ok(Received::TimedOut);
        }
        Ok(self.recv_now(buf, 0)?.unwrap_or(Received::TimedOut))
    }

    /// Receives a waiting message; None if there is none (with
    /// `MSG_DONTWAIT`).
    fn recv_now(&self, buf: &mut Vec<u8>, flags: libc::c_int) -> io::Result<Option<Received>> {
        buf.resize(MAX_MESSAGE, 0);
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr() as *mut libc::c_void,
            iov_len: buf.len(),
        };
        // SAFETY: CMSG_SPACE is arithmetic.
        let space =
            unsafe { libc::CMSG_SPACE((MAX_FDS * std::mem::size_of::<RawFd>()) as u32) } as usize;
        let mut control = vec![0u64; space.div_ceil(8)];
        // SAFETY: as in send.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr() as *mut libc::c_void;
        msg.msg_controllen = space as _;
        let received = loop {
            // SAFETY: msg points at live buffers; received fds are close-on-exec.
            let n = unsafe {
                libc::recvmsg(
                    self.fd.as_raw_fd(),
                    &mut msg,
                    libc::MSG_CMSG_CLOEXEC | flags,
                )
            };
            if n >= 0 {
                break n as usize;
            }
            let err = io::Error::last_os_error();
            match err.kind() {
                io::ErrorKind::Interrupted => continue,
                io::ErrorKind::WouldBlock => return Ok(None),
                io::ErrorKind::ConnectionReset => return Ok(Some(Received::Closed)),
                _ => return Err(err),
            }
        };
        let mut fds = Vec::new();
        // SAFETY: walks the control messages the kernel wrote.
        unsafe {
            let mut header = libc::CMSG_FIRSTHDR(&msg);
            while !header.is_null() {
                if (*header).cmsg_level == libc::SOL_SOCKET
                    && (*header).cmsg_type == libc::SCM_RIGHTS
                {
                    let data = libc::CMSG_DATA(header) as *const RawFd;
                    let count = ((*header).cmsg_len as usize - libc::CMSG_LEN(0) as usize)
                        / std::mem::size_of::<RawFd>();
                    for i in 0..count {
                        fds.push(OwnedFd::from_raw_fd(std::ptr::read_unaligned(data.add(i))));
                    }
                }
                header = libc::CMSG_NXTHDR(&msg, header);
            }
        }
        if msg.msg_flags & (libc::MSG_TRUNC | libc::MSG_CTRUNC) != 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "a message over the channel's limit was cut",
            ));
        }
        if received == 0 && fds.is_empty() {
            // SEQPACKET: a zero-length read is the peer's end-of-file.
            return Ok(Some(Received::Closed));
        }
        Ok(Some(Received::Message(received, fds)))
    }

    /// Whether a message (or end-of-file) is waiting, within `timeout`.
    fn wait_readable(&self, timeout: Option<Duration>) -> io::Result<bool> {
        let millis = timeout.map_or(-1, |t| t.as_millis().min(i32::MAX as u128) as i32);
        let mut pfd = libc::pollfd {
            fd: self.fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        loop {
            // SAFETY: one valid pollfd.
            let rc = unsafe { libc::poll(&mut pfd, 1, millis) };
            if rc >= 0 {
                return Ok(rc > 0);
            }
            let err = io::Error::last_os_error();
            if err.kind() != io::ErrorKind::Interrupted {
                return Err(err);
            }
            // A signal (the caller's Ctrl-C): its handler runs when the
            // call returns; keep waiting for the worker.
        }
    }

    /// Whether the other end has hung up, without reading anything.
    pub fn peer_gone(&self) -> bool {
        let mut pfd = libc::pollfd {
            fd: self.fd.as_raw_fd(),
            events: 0,
            revents: 0,
        };
        // SAFETY: one valid pollfd; zero timeout.
        let rc = unsafe { libc::poll(&mut pfd, 1, 0) };
        rc > 0 && pfd.revents & (libc::POLLHUP | libc::POLLERR) != 0
    }
}

impl From<Channel> for OwnedFd {
    fn from(channel: Channel) -> OwnedFd {
        channel.fd
    }
}

impl AsFd for Channel {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// Room for the largest message in each direction.
fn set_buffer_sizes(fd: &OwnedFd) -> io::Result<()> {
    let size = (2 * MAX_MESSAGE) as libc::c_int;
    for option in [libc::SO_SNDBUF, libc::SO_RCVBUF] {
        // SAFETY: setsockopt reads one int.
        let rc = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                option,
                &size as *const libc::c_int as *const libc::c_void,
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::segment::Segment;

    #[test]
    fn messages_arrive_whole_with_their_descriptors() {
        let (a, b) = Channel::pair().unwrap();
        let segment = Segment::create(4096).unwrap();
        a.send(b"hello", &[segment.as_fd()]).unwrap();
        let mut buf = Vec::new();
        match b
            .recv(&mut buf, Duration::ZERO, Some(Duration::from_secs(1)))
            .unwrap()
        {
            Received::Message(n, fds) => {
                assert_eq!(&buf[..n], b"hello");
                assert_eq!(fds.len(), 1);
                let mapped = Segment::map(fds.into_iter().next().unwrap(), 4096).unwrap();
                // SAFETY: the test is the mappings' only user.
                unsafe {
                    segment.bytes_mut(0, 1).unwrap()[0] = 5;
                    assert_eq!(mapped.bytes(0, 1).unwrap(), [5]);
                }
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            b.recv(
                &mut buf,
                Duration::from_micros(50),
                Some(Duration::from_millis(10))
            )
            .unwrap(),
            Received::TimedOut
        ));
        assert!(!b.peer_gone());
        drop(a);
        assert!(b.peer_gone());
        assert!(matches!(
            b.recv(&mut buf, Duration::from_micros(50), None).unwrap(),
            Received::Closed
        ));
    }
}
