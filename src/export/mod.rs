//! Images leaving and entering the machine without a registry: image archives written
//! (`archive`) and read (`load`), and Kubernetes manifests (`kube`).

pub mod kube;
pub mod load;
