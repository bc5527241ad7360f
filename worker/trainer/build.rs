//! Links libtorch for this package's tests (rpath, --no-as-needed).
include!("../../common/torch_link.rs");
fn main() {
    link_torch();
}
