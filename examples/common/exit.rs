//! How the examples end: an error is printed as its message (`Display`, which names the file, variable or
//! version involved), never as a `Debug` dump, and the process exits non-zero.

#![allow(dead_code, unreachable_pub)]

use std::process::ExitCode;

/// `ExitCode::SUCCESS`, or the error's message on stderr and `ExitCode::FAILURE`.
pub fn exit_code(result: Result<(), Box<dyn std::error::Error>>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
