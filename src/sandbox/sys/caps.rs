//! Capabilities: the inheritable and ambient sets across an exec.

use std::io;
use std::os::unix::process::CommandExt;
use std::process::Command;

use nix::libc;

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const CAPABILITY_VERSION_3: u32 = 0x2008_0522;

/// Sets the inheritable capabilities to the permitted ones (`keep`) or to none; returns the
/// permitted set as two 32-bit words.
pub(super) fn set_inheritable(keep: bool) -> io::Result<[u32; 2]> {
    let mut header = CapHeader {
        version: CAPABILITY_VERSION_3,
        pid: 0,
    };
    let mut data = [CapData {
        effective: 0,
        permitted: 0,
        inheritable: 0,
    }; 2];
    // SAFETY: capget(2)/capset(2) read the header and read or write two CapData structs, the
    // layout _LINUX_CAPABILITY_VERSION_3 defines; all live on this stack frame.
    unsafe {
        if libc::syscall(
            libc::SYS_capget,
            &mut header as *mut CapHeader,
            data.as_mut_ptr(),
        ) < 0
        {
            return Err(io::Error::last_os_error());
        }
        for d in &mut data {
            d.inheritable = if keep { d.permitted } else { 0 };
        }
        if libc::syscall(
            libc::SYS_capset,
            &mut header as *mut CapHeader,
            data.as_ptr(),
        ) < 0
        {
            return Err(io::Error::last_os_error());
        }
    }
    Ok([data[0].permitted, data[1].permitted])
}

/// `cmd` keeps this process's capabilities across `exec` although it runs as a non-root id
/// (fuse-overlayfs under a single-id map, where the only id inside is the user's own).
pub fn keep_capabilities(cmd: &mut Command) {
    let hook = || -> io::Result<()> {
        let permitted = set_inheritable(true)?;
        for cap in 0..64u32 {
            if permitted[(cap / 32) as usize] & (1 << (cap % 32)) != 0 {
                // SAFETY: prctl(2) with integer arguments only.
                unsafe {
                    libc::prctl(
                        libc::PR_CAP_AMBIENT,
                        libc::PR_CAP_AMBIENT_RAISE,
                        cap as libc::c_ulong,
                        0,
                        0,
                    )
                };
            }
        }
        Ok(())
    };
    // SAFETY: the hook only makes async-signal-safe system calls and allocates nothing.
    unsafe { cmd.pre_exec(hook) };
}
