//! Records when the gateway was built, as `ANJU_BUILD_UNIX_S` (seconds since 1970), for the
//! clock check (`src/clock.rs`): a box whose clock reads earlier than its own software's build
//! cannot have a synchronised clock. `SOURCE_DATE_EPOCH` (reproducible builds, Debian's
//! packaging) wins over the time of the build. The script runs again only when that variable
//! or this file changes, so a later rebuild keeps an earlier time: still a valid lower bound.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=SOURCE_DATE_EPOCH");
    let from_env = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok());
    let secs = from_env.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    });
    println!("cargo:rustc-env=ANJU_BUILD_UNIX_S={secs}");
}
