//! Links libtorch into `mnistctl` (rpath, --no-as-needed so CUDA is kept).
include!("../common/torch_link.rs");
fn main() {
    link_torch();
}
