//! Standard output of the client commands: [`say!`] prints a line like `println!`, but a reader
//! gone (`clickedge domain list | head`) ends the command quietly with status 0 instead of the
//! panic `println!` raises on a closed pipe (the runtime ignores SIGPIPE, so writes get EPIPE).

use std::fmt;
use std::io::{self, Write as _};

/// Prints one line to standard output through [`line`].
macro_rules! say {
    () => {
        $crate::cli::out::line(format_args!(""))
    };
    ($($arg:tt)*) => {
        $crate::cli::out::line(format_args!($($arg)*))
    };
}
pub(crate) use say;

/// Writes `args` and a newline to standard output. A closed pipe exits the process with status 0
/// (the reader took what it wanted; nothing is left to do); any other write failure exits with
/// status 1 naming it. Client commands only: the edge itself never prints through this.
pub fn line(args: fmt::Arguments<'_>) {
    write_or_exit(|out| out.write_fmt(args).and_then(|()| out.write_all(b"\n")));
}

/// Writes text as is (no newline added), like [`line`].
pub fn text(s: &str) {
    write_or_exit(|out| out.write_all(s.as_bytes()));
}

fn write_or_exit(write: impl FnOnce(&mut io::StdoutLock<'static>) -> io::Result<()>) {
    let mut out = io::stdout().lock();
    match write(&mut out).and_then(|()| out.flush()) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => std::process::exit(0),
        Err(e) => {
            eprintln!("error: writing to standard output: {e}");
            std::process::exit(1);
        }
    }
}
