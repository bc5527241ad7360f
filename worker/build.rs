//! Links libtorch into `mnist-worker` and its tests (rpath, --no-as-needed so CUDA is kept).
include!("../common/torch_link.rs");
fn main() {
    link_torch();
}
