//! One shared memory segment: an anonymous `memfd`, mapped read-write by the
//! side that made it, and read-only by a side it was sent to that only reads
//! it (see `PeerSegments`).
//!
//! A memfd has no name in any filesystem: it lives while a descriptor or a
//! mapping of it does, in any process. So a segment outlives the process
//! that made it for as long as the other side maps it (outputs stay valid
//! after their worker exits), and nothing is left behind when every process
//! holding it is gone, however it ended.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

/// A mapped shared memory segment.
#[derive(Debug)]
pub struct Segment {
    fd: OwnedFd,
    ptr: *mut u8,
    len: usize,
    writable: bool,
}

// SAFETY: the mapping is plain memory; who writes where is the protocol's
// business (a region is written only by the side that owns it, before it is
// lent).
unsafe impl Send for Segment {}
// SAFETY: as for Send; `&Segment` hands out only raw pointers and `unsafe`
// accessors whose callers uphold that protocol.
unsafe impl Sync for Segment {}

impl Segment {
    /// Creates a zero-filled segment of `len` bytes (at least one page).
    pub fn create(len: usize) -> io::Result<Segment> {
        let len = len.max(page_size());
        // SAFETY: the name is a NUL-terminated literal.
        let raw = unsafe { libc::memfd_create(c"neuropods-tensors".as_ptr(), libc::MFD_CLOEXEC) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: memfd_create returned a fresh descriptor we own.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let size = libc::off_t::try_from(len)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "segment too large"))?;
        // SAFETY: plain call on a descriptor we own.
        if unsafe { libc::ftruncate(fd.as_raw_fd(), size) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Segment::map(fd, len)
    }

    /// Maps a segment received from the other side, read-write: for pages
    /// both sides write by design (the heartbeat). `len` is what the sender
    /// said; it is checked against the segment's real size, so a wrong
    /// length cannot make this side read past the end of the file.
    pub fn map(fd: OwnedFd, len: usize) -> io::Result<Segment> {
        Segment::map_as(fd, len, true)
    }

    /// Maps a segment received from the other side, read-only: the bytes
    /// the sender lent are its own, and a write from this side faults here
    /// instead of changing them under the sender. Defence in depth: the
    /// sender's own mapping stays writable. `len` is checked as in
    /// [`Segment::map`].
    pub fn map_read_only(fd: OwnedFd, len: usize) -> io::Result<Segment> {
        Segment::map_as(fd, len, false)
    }

    fn map_as(fd: OwnedFd, len: usize, writable: bool) -> io::Result<Segment> {
        // SAFETY: `stat` is plain data, for which all zeroes is a value.
        let mut stat: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: fstat fills the struct from a descriptor we own.
        if unsafe { libc::fstat(fd.as_raw_fd(), &mut stat) } != 0 {
            return Err(io::Error::last_os_error());
        }
        if len == 0 || u64::try_from(stat.st_size).ok() != Some(len as u64) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "shared segment is {} bytes, the message said {len}",
                    stat.st_size
                ),
            ));
        }
        // SAFETY: a fresh shared mapping of a file of at least `len` bytes.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                if writable {
                    libc::PROT_READ | libc::PROT_WRITE
                } else {
                    libc::PROT_READ
                },
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Segment {
            fd,
            ptr: ptr as *mut u8,
            len,
            writable,
        })
    }

    /// Size in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Never true: segments have at least one page.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Address of the first byte of this side's mapping.
    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr
    }

    /// Whether `[ptr, ptr + len)` lies inside this mapping; the offset if so.
    pub fn offset_of(&self, ptr: *const u8, len: usize) -> Option<usize> {
        let start = self.ptr as usize;
        let at = ptr as usize;
        let offset = at.checked_sub(start)?;
        (offset.checked_add(len)? <= self.len).then_some(offset)
    }

    /// The bytes `[offset, offset + len)`, if inside the segment.
    ///
    /// # Safety
    /// No one may write those bytes while the slice is used.
    pub unsafe fn bytes(&self, offset: usize, len: usize) -> Option<&[u8]> {
        let end = offset.checked_add(len)?;
        // SAFETY: `[offset, end)` lies inside the mapping, checked here;
        // nobody writes it meanwhile, as the caller promises.
        (end <= self.len).then(|| unsafe { std::slice::from_raw_parts(self.ptr.add(offset), len) })
    }

    /// The bytes `[offset, offset + len)` to write, if inside the segment
    /// and it is mapped writable here.
    ///
    /// # Safety
    /// The caller must be the only one reading or writing those bytes while
    /// the slice is used.
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn bytes_mut(&self, offset: usize, len: usize) -> Option<&mut [u8]> {
        let end = offset.checked_add(len)?;
        // SAFETY: `[offset, end)` lies inside a writable mapping, checked
        // here; nobody else touches it meanwhile, as the caller promises.
        (self.writable && end <= self.len)
            .then(|| unsafe { std::slice::from_raw_parts_mut(self.ptr.add(offset), len) })
    }
}

impl AsFd for Segment {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl Drop for Segment {
    fn drop(&mut self) {
        // SAFETY: the mapping was made by `map` and is unmapped once.
        unsafe { libc::munmap(self.ptr as *mut libc::c_void, self.len) };
    }
}

fn page_size() -> usize {
    // SAFETY: sysconf only reads.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(size).unwrap_or(4096).max(4096)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_mapping_sees_the_first_ones_writes() {
        let a = Segment::create(10).unwrap();
        assert!(a.len() >= 4096);
        let fd = a.as_fd().try_clone_to_owned().unwrap();
        let b = Segment::map(fd, a.len()).unwrap();
        // SAFETY: the test is the mappings' only user, one step at a time.
        unsafe {
            a.bytes_mut(100, 3).unwrap().copy_from_slice(b"abc");
            assert_eq!(b.bytes(100, 3).unwrap(), b"abc");
            assert!(b.bytes(a.len() - 1, 2).is_none());
        }
    }

    #[test]
    fn a_read_only_mapping_sees_writes_but_cannot_make_them() {
        let a = Segment::create(4096).unwrap();
        let fd = a.as_fd().try_clone_to_owned().unwrap();
        let b = Segment::map_read_only(fd, a.len()).unwrap();
        // SAFETY: the test is the mappings' only user, one step at a time.
        unsafe {
            a.bytes_mut(7, 2).unwrap().copy_from_slice(b"hi");
            assert_eq!(b.bytes(7, 2).unwrap(), b"hi");
            assert!(b.bytes_mut(7, 2).is_none());
        }
        // The kernel maps it read-only: a write through the pointer (what
        // a framework working in place would do) would fault.
        assert_eq!(mapping_permissions(b.as_ptr() as usize), "r--s");
        assert_eq!(mapping_permissions(a.as_ptr() as usize), "rw-s");
    }

    /// The permissions of this process's mapping holding `address`, as
    /// /proc/self/maps gives them (a test that writes to see a fault would
    /// have to fork a multithreaded test process).
    fn mapping_permissions(address: usize) -> String {
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        for line in maps.lines() {
            let mut fields = line.split_whitespace();
            let (span, perms) = (fields.next().unwrap(), fields.next().unwrap());
            let (start, end) = span.split_once('-').unwrap();
            let start = usize::from_str_radix(start, 16).unwrap();
            let end = usize::from_str_radix(end, 16).unwrap();
            if (start..end).contains(&address) {
                return perms.to_string();
            }
        }
        panic!("no mapping holds {address:#x}");
    }

    #[test]
    fn a_length_that_is_not_the_segments_is_refused() {
        let a = Segment::create(4096).unwrap();
        let fd = a.as_fd().try_clone_to_owned().unwrap();
        let err = Segment::map(fd, 8192).unwrap_err();
        assert!(err.to_string().contains("8192"), "{err}");
    }
}
