//! The `mxscreen` binary: everything lives in the library; see `mxscreen --help`.

fn main() -> std::process::ExitCode {
    mxscreen::cli::main()
}
