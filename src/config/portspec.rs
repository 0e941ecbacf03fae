//! pasta's port specifications (`-t`, `-u`, `-T`, `-U`): parsing into [`PortSpec`].

use super::pasta::PortSpec;

/// Add one `-OPT ARG` occurrence to `spec` (options accumulate as pasta's do). `opt` is the
/// short option letter (`t`, `u`, `T`, `U`); errors are pasta's messages.
pub fn add(spec: &mut PortSpec, opt: char, arg: &str) -> Result<(), String> {
    let _ = opt;
    match arg {
        "none" => *spec = PortSpec::None,
        "auto" => *spec = PortSpec::Auto,
        _ => return Err(format!("Invalid port specifier {arg}")),
    }
    Ok(())
}
