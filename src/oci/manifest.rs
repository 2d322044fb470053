//! Manifest, index and image-config documents; Docker v2s2 and OCI media types are treated alike.
//! A document is read as what its label says only when the label is unambiguous: the checks
//! containerd and distribution make since CVE-2021-41190 (see [`Document::parse`]).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::digest::Digest;
use super::platform::Platform;

pub struct MediaType;

impl MediaType {
    pub const OCI_MANIFEST: &'static str = "application/vnd.oci.image.manifest.v1+json";
    pub const OCI_INDEX: &'static str = "application/vnd.oci.image.index.v1+json";
    pub const DOCKER_MANIFEST: &'static str =
        "application/vnd.docker.distribution.manifest.v2+json";
    pub const DOCKER_LIST: &'static str =
        "application/vnd.docker.distribution.manifest.list.v2+json";
    pub const OCI_LAYER_TAR: &'static str = "application/vnd.oci.image.layer.v1.tar";
    pub const OCI_LAYER_GZIP: &'static str = "application/vnd.oci.image.layer.v1.tar+gzip";
    pub const OCI_LAYER_ZSTD: &'static str = "application/vnd.oci.image.layer.v1.tar+zstd";
    pub const DOCKER_LAYER_GZIP: &'static str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
    pub const OCI_CONFIG: &'static str = "application/vnd.oci.image.config.v1+json";
    pub const DOCKER_CONFIG: &'static str = "application/vnd.docker.container.image.v1+json";
    pub const DOCKER_SCHEMA1: &'static str = "application/vnd.docker.distribution.manifest.v1+json";
    pub const DOCKER_SCHEMA1_SIGNED: &'static str =
        "application/vnd.docker.distribution.manifest.v1+prettyjws";

    /// Everything `dev` can read, for the `Accept` header.
    pub const ACCEPT_MANIFESTS: &'static str = "application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json";

    pub fn is_index(mt: &str) -> bool {
        mt == Self::OCI_INDEX || mt == Self::DOCKER_LIST
    }

    pub fn is_manifest(mt: &str) -> bool {
        mt == Self::OCI_MANIFEST || mt == Self::DOCKER_MANIFEST
    }

    pub fn is_config(mt: &str) -> bool {
        mt == Self::OCI_CONFIG || mt == Self::DOCKER_CONFIG
    }

    fn is_schema1(mt: &str) -> bool {
        mt == Self::DOCKER_SCHEMA1 || mt == Self::DOCKER_SCHEMA1_SIGNED
    }

    /// A `Content-Type` that says nothing about which document it is.
    fn is_generic(mt: &str) -> bool {
        matches!(
            mt,
            "" | "application/json" | "application/octet-stream" | "text/plain"
        )
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    #[serde(default)]
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub urls: Option<Vec<String>>,
}

impl Descriptor {
    /// A descriptor of a blob dev wrote: no platform, annotations or URLs.
    pub fn new(media_type: &str, digest: &Digest, size: u64) -> Descriptor {
        Descriptor {
            media_type: media_type.to_string(),
            digest: digest.clone(),
            size,
            platform: None,
            annotations: None,
            urls: None,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageManifest {
    pub schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageIndex {
    pub schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    pub manifests: Vec<Descriptor>,
}

/// The parts of the image config `dev` reads. Unknown fields are kept in the raw JSON.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ImageConfig {
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    #[serde(default)]
    pub config: RunConfig,
    pub rootfs: RootFs,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RunConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<std::collections::BTreeMap<String, String>>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct RootFs {
    #[serde(rename = "type", default)]
    pub kind: String,
    pub diff_ids: Vec<Digest>,
}

/// Why a manifest, index or config is refused. Each message is a clause that follows
/// "manifest `x` from `registry` is refused: ".
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DocumentError {
    #[error("it is not a JSON object: {0}")]
    NotJson(String),
    #[error("it is a Docker schema 1 manifest, which `dev` does not support")]
    Schema1,
    #[error("it has media type `{0}`, which is neither an image manifest nor an image index")]
    UnknownType(String),
    #[error("it names no media type (Content-Type `{0}` and no `mediaType` in the document)")]
    NoType(String),
    #[error("it is served as `{served}` but its `mediaType` says `{declared}`")]
    Disagree { served: String, declared: String },
    #[error(
        "it has both `manifests` and `config`/`layers`, so it reads as an index and as a manifest"
    )]
    Ambiguous,
    #[error("it is labelled `{label}` but has `{field}`, a field of an {other}")]
    Shape {
        label: String,
        field: &'static str,
        other: &'static str,
    },
    #[error("it has schemaVersion {0}; `dev` reads schema version 2")]
    SchemaVersion(u64),
    #[error("its config has media type `{0}`, which is not an image config")]
    ConfigType(String),
    #[error("its {platform} entry ({digest}) has media type `{media_type}`, which is not an image manifest `dev` can read")]
    EntryType {
        platform: String,
        digest: String,
        media_type: String,
    },
    #[error("the index lists it as `{expected}`, but the registry served `{served}`")]
    NotAsListed { expected: String, served: String },
    #[error("`{path}`: {message}")]
    Field { path: String, message: String },
}

/// A manifest or an index, each with the known media type it was accepted as.
#[derive(Debug)]
pub enum Document {
    Index {
        media_type: &'static str,
        index: ImageIndex,
    },
    Manifest {
        media_type: &'static str,
        manifest: ImageManifest,
    },
}

impl Document {
    /// Reads a document the registry served with `content_type`, as containerd and distribution
    /// do since CVE-2021-41190: the `Content-Type` and the document's own `mediaType` (when
    /// present) agree and name a known type; a document with the fields of both an index and a
    /// manifest is refused; so are schema 1 manifests and configs of unknown type.
    ///
    /// One leniency: a `Content-Type` that names no document type (`application/json`, none)
    /// defers to the document's `mediaType`, which must then be there and be known.
    pub fn parse(bytes: &[u8], content_type: &str) -> Result<Document, DocumentError> {
        Self::parse_with(bytes, content_type, MediaType::is_config)
    }

    /// Like [`Document::parse`], for an OCI artifact whose manifest's config is of
    /// `config_type` (a Dev Container Feature's is `application/vnd.devcontainers`).
    pub fn parse_artifact(
        bytes: &[u8],
        content_type: &str,
        config_type: &str,
    ) -> Result<Document, DocumentError> {
        Self::parse_with(bytes, content_type, |mt| mt == config_type)
    }

    fn parse_with(
        bytes: &[u8],
        content_type: &str,
        config_ok: impl Fn(&str) -> bool,
    ) -> Result<Document, DocumentError> {
        let served = content_type
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_string();
        let doc: serde_json::Map<String, serde_json::Value> =
            serde_json::from_slice(bytes).map_err(|e| DocumentError::NotJson(e.to_string()))?;
        let declared = match doc.get("mediaType") {
            None => None,
            Some(serde_json::Value::String(s)) => Some(s.as_str()),
            Some(_) => {
                return Err(DocumentError::Field {
                    path: "mediaType".into(),
                    message: "expected a string".into(),
                })
            }
        };
        let schema1 = doc.get("schemaVersion").and_then(|v| v.as_u64()) == Some(1)
            || doc.contains_key("fsLayers")
            || MediaType::is_schema1(&served)
            || declared.is_some_and(MediaType::is_schema1);
        if schema1 {
            return Err(DocumentError::Schema1);
        }
        let has_manifests = doc.contains_key("manifests");
        let manifest_field = ["config", "layers"]
            .into_iter()
            .find(|k| doc.contains_key(*k));
        if has_manifests && manifest_field.is_some() {
            return Err(DocumentError::Ambiguous);
        }
        let label = match declared {
            Some(d) if !MediaType::is_generic(&served) && d != served => {
                return Err(DocumentError::Disagree {
                    served,
                    declared: d.to_string(),
                })
            }
            Some(d) => d.to_string(),
            None if MediaType::is_generic(&served) => return Err(DocumentError::NoType(served)),
            None => served,
        };
        let known = [
            MediaType::OCI_INDEX,
            MediaType::DOCKER_LIST,
            MediaType::OCI_MANIFEST,
            MediaType::DOCKER_MANIFEST,
        ];
        let Some(media_type) = known.into_iter().find(|k| *k == label) else {
            return Err(DocumentError::UnknownType(label));
        };
        let version = doc.get("schemaVersion").and_then(|v| v.as_u64());
        if let Some(v) = version.filter(|v| *v != 2) {
            return Err(DocumentError::SchemaVersion(v));
        }
        if MediaType::is_index(media_type) {
            if let Some(field) = manifest_field {
                return Err(DocumentError::Shape {
                    label,
                    field,
                    other: "image manifest",
                });
            }
            let index = from_json(bytes)?;
            Ok(Document::Index { media_type, index })
        } else {
            if has_manifests {
                return Err(DocumentError::Shape {
                    label,
                    field: "manifests",
                    other: "image index",
                });
            }
            let manifest: ImageManifest = from_json(bytes)?;
            if !config_ok(&manifest.config.media_type) {
                return Err(DocumentError::ConfigType(manifest.config.media_type));
            }
            Ok(Document::Manifest {
                media_type,
                manifest,
            })
        }
    }

    pub fn media_type(&self) -> &'static str {
        match self {
            Document::Index { media_type, .. } | Document::Manifest { media_type, .. } => {
                media_type
            }
        }
    }
}

/// Deserializes `T`, naming the field that is wrong (`config.Env[0]`), not only the position.
pub fn from_json<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, DocumentError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let syntax = e.inner().is_syntax() || e.inner().is_eof();
        let message = e.into_inner().to_string();
        if syntax || path == "." || path.is_empty() {
            DocumentError::NotJson(message)
        } else {
            DocumentError::Field { path, message }
        }
    })
}

impl ImageConfig {
    /// Reads an image config, naming the field when one has the wrong type.
    pub fn parse(bytes: &[u8]) -> Result<ImageConfig, DocumentError> {
        from_json(bytes)
    }
}

/// Why no entry of an index is followed.
#[derive(Debug, PartialEq, Eq)]
pub enum EntryError {
    /// No entry for the platform; the platforms the index has, attestations left out.
    NoMatch(Vec<String>),
    /// The entry for the platform is not an image manifest `dev` can read.
    BadType { digest: Digest, media_type: String },
}

impl ImageIndex {
    /// The entry for `platform`, among the entries that are image manifests: an entry with a
    /// missing or unknown media type (an artifact, a nested index) is never followed.
    pub fn entry_for(&self, platform: &Platform) -> Result<&Descriptor, EntryError> {
        let images = self
            .manifests
            .iter()
            .filter(|d| MediaType::is_manifest(&d.media_type));
        if let Some(chosen) = platform.choose(images) {
            return Ok(chosen);
        }
        if let Some(other) = platform.choose(&self.manifests) {
            return Err(EntryError::BadType {
                digest: other.digest.clone(),
                media_type: other.media_type.clone(),
            });
        }
        Err(EntryError::NoMatch(
            self.manifests
                .iter()
                .filter_map(|d| d.platform.as_ref())
                .filter(|p| p.os != "unknown")
                .map(|p| p.to_string())
                .collect(),
        ))
    }
}

/// How a layer blob is compressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

impl Compression {
    /// From the media type; `None` for media types that are not layers `dev` can unpack.
    pub fn from_media_type(mt: &str) -> Option<Self> {
        match mt {
            MediaType::OCI_LAYER_TAR | "application/vnd.docker.image.rootfs.diff.tar" => {
                Some(Self::None)
            }
            MediaType::OCI_LAYER_GZIP | MediaType::DOCKER_LAYER_GZIP => Some(Self::Gzip),
            MediaType::OCI_LAYER_ZSTD => Some(Self::Zstd),
            _ => None,
        }
    }

    /// From the first bytes of the blob, which is what actually decides.
    pub fn sniff(head: &[u8]) -> Self {
        if head.starts_with(&[0x1f, 0x8b]) {
            Self::Gzip
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Self::Zstd
        } else {
            Self::None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_docker_v2s2_manifest() {
        let d = format!("sha256:{}", "1".repeat(64));
        let json = format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","config":{{"mediaType":"{}","size":7,"digest":"{d}"}},"layers":[{{"mediaType":"{}","size":9,"digest":"{d}"}}]}}"#,
            MediaType::DOCKER_MANIFEST,
            "application/vnd.docker.container.image.v1+json",
            MediaType::DOCKER_LAYER_GZIP
        );
        let m: ImageManifest = serde_json::from_str(&json).unwrap();
        assert_eq!(m.layers[0].size, 9);
        assert_eq!(
            Compression::from_media_type(&m.layers[0].media_type),
            Some(Compression::Gzip)
        );
    }

    const D: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";

    fn manifest(media_type: Option<&str>, config_type: &str) -> String {
        let mt = media_type.map_or(String::new(), |m| format!(r#""mediaType":"{m}","#));
        format!(
            r#"{{"schemaVersion":2,{mt}"config":{{"mediaType":"{config_type}","size":7,"digest":"{D}"}},"layers":[]}}"#
        )
    }

    fn index(media_type: Option<&str>, entry_type: &str) -> String {
        let mt = media_type.map_or(String::new(), |m| format!(r#""mediaType":"{m}","#));
        format!(
            r#"{{"schemaVersion":2,{mt}"manifests":[{{"mediaType":"{entry_type}","size":7,"digest":"{D}","platform":{{"os":"linux","architecture":"amd64"}}}}]}}"#
        )
    }

    fn parse(body: &str, content_type: &str) -> Result<&'static str, DocumentError> {
        Document::parse(body.as_bytes(), content_type).map(|d| d.media_type())
    }

    #[test]
    fn reads_documents_whose_label_and_header_agree() {
        let m = manifest(Some(MediaType::OCI_MANIFEST), MediaType::OCI_CONFIG);
        assert_eq!(
            parse(
                &m,
                "application/vnd.oci.image.manifest.v1+json; charset=utf-8"
            ),
            Ok(MediaType::OCI_MANIFEST)
        );
        // No `mediaType` in the document (it is optional in OCI): the header decides.
        let m = manifest(None, MediaType::DOCKER_CONFIG);
        assert_eq!(
            parse(&m, MediaType::DOCKER_MANIFEST),
            Ok(MediaType::DOCKER_MANIFEST)
        );
        let i = index(Some(MediaType::DOCKER_LIST), MediaType::DOCKER_MANIFEST);
        assert_eq!(
            parse(&i, MediaType::DOCKER_LIST),
            Ok(MediaType::DOCKER_LIST)
        );
        // A header that names no document type defers to the document's own label.
        let i = index(Some(MediaType::OCI_INDEX), MediaType::OCI_MANIFEST);
        assert_eq!(parse(&i, "application/json"), Ok(MediaType::OCI_INDEX));
    }

    #[test]
    fn refuses_a_label_that_disagrees_with_the_header() {
        let i = index(Some(MediaType::OCI_INDEX), MediaType::OCI_MANIFEST);
        assert_eq!(
            parse(&i, MediaType::OCI_MANIFEST),
            Err(DocumentError::Disagree {
                served: MediaType::OCI_MANIFEST.into(),
                declared: MediaType::OCI_INDEX.into()
            })
        );
        let m = manifest(Some(MediaType::DOCKER_MANIFEST), MediaType::OCI_CONFIG);
        assert!(matches!(
            parse(&m, MediaType::OCI_MANIFEST),
            Err(DocumentError::Disagree { .. })
        ));
    }

    #[test]
    fn refuses_a_document_with_index_and_manifest_fields() {
        let both = format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","manifests":[],"config":{{"mediaType":"{}","size":7,"digest":"{D}"}},"layers":[]}}"#,
            MediaType::OCI_MANIFEST,
            MediaType::OCI_CONFIG
        );
        assert_eq!(
            parse(&both, MediaType::OCI_MANIFEST),
            Err(DocumentError::Ambiguous)
        );
        // Labelled a manifest, shaped as an index (no mediaType to disagree with).
        let i = index(None, MediaType::OCI_MANIFEST);
        assert!(matches!(
            parse(&i, MediaType::OCI_MANIFEST),
            Err(DocumentError::Shape {
                field: "manifests",
                ..
            })
        ));
        let m = manifest(None, MediaType::OCI_CONFIG);
        assert!(matches!(
            parse(&m, MediaType::OCI_INDEX),
            Err(DocumentError::Shape {
                field: "config",
                ..
            })
        ));
    }

    #[test]
    fn refuses_unknown_and_missing_media_types() {
        let odd = "application/vnd.oci.image.manifest.v1+jsonXXX";
        let m = manifest(Some(odd), MediaType::OCI_CONFIG);
        assert_eq!(parse(&m, odd), Err(DocumentError::UnknownType(odd.into())));
        assert_eq!(
            parse(&m, "application/json"),
            Err(DocumentError::UnknownType(odd.into()))
        );
        let m = manifest(None, MediaType::OCI_CONFIG);
        assert_eq!(parse(&m, odd), Err(DocumentError::UnknownType(odd.into())));
        assert_eq!(parse(&m, ""), Err(DocumentError::NoType(String::new())));
        assert!(matches!(
            parse("[1]", MediaType::OCI_MANIFEST),
            Err(DocumentError::NotJson(_))
        ));
    }

    #[test]
    fn refuses_config_types_that_are_not_image_configs() {
        for bad in ["invalid", "", MediaType::OCI_LAYER_GZIP] {
            let m = manifest(Some(MediaType::OCI_MANIFEST), bad);
            assert_eq!(
                parse(&m, MediaType::OCI_MANIFEST),
                Err(DocumentError::ConfigType(bad.into())),
                "{bad}"
            );
        }
    }

    #[test]
    fn says_schema_1_is_not_supported() {
        let v1 = r#"{"schemaVersion":1,"name":"x","tag":"v1","fsLayers":[{"blobSum":"sha256:1"}],"history":[]}"#;
        assert_eq!(
            parse(v1, MediaType::DOCKER_SCHEMA1_SIGNED),
            Err(DocumentError::Schema1)
        );
        assert_eq!(parse(v1, "application/json"), Err(DocumentError::Schema1));
        let m = manifest(None, MediaType::OCI_CONFIG);
        assert_eq!(
            parse(&m, MediaType::DOCKER_SCHEMA1),
            Err(DocumentError::Schema1)
        );
        assert!(DocumentError::Schema1.to_string().contains("schema 1"));
        let v3 = manifest(None, MediaType::OCI_CONFIG)
            .replace("\"schemaVersion\":2", "\"schemaVersion\":3");
        assert_eq!(
            parse(&v3, MediaType::OCI_MANIFEST),
            Err(DocumentError::SchemaVersion(3))
        );
    }

    #[test]
    fn index_entries_of_unknown_type_are_not_followed() {
        let host = Platform {
            os: "linux".into(),
            architecture: "amd64".into(),
            variant: None,
        };
        let read = |body: &str| -> ImageIndex { serde_json::from_str(body).unwrap() };
        let good = read(&index(None, MediaType::OCI_MANIFEST));
        assert_eq!(good.entry_for(&host).unwrap().digest.to_string(), D);
        for bad in [
            "",
            "application/vnd.oci.image.manifest.v1+jsonXXX",
            MediaType::OCI_INDEX,
        ] {
            let idx = read(&index(None, bad));
            assert_eq!(
                idx.entry_for(&host),
                Err(EntryError::BadType {
                    digest: Digest::parse(D).unwrap(),
                    media_type: bad.into()
                }),
                "{bad}"
            );
        }
        let arm = Platform {
            os: "linux".into(),
            architecture: "arm64".into(),
            variant: None,
        };
        assert_eq!(
            good.entry_for(&arm),
            Err(EntryError::NoMatch(vec!["linux/amd64".into()]))
        );
    }

    #[test]
    fn config_errors_name_the_field() {
        let cfg = r#"{"architecture":"amd64","os":"linux","config":{"Env":"PATH=/bin"},"rootfs":{"type":"layers","diff_ids":[]}}"#;
        let err = ImageConfig::parse(cfg.as_bytes()).unwrap_err();
        assert!(
            matches!(&err, DocumentError::Field { path, .. } if path == "config.Env"),
            "{err}"
        );
        assert!(
            err.to_string().starts_with("`config.Env`: invalid type"),
            "{err}"
        );
        let cfg = r#"{"rootfs":{"type":"layers","diff_ids":["sha256:x"]}}"#;
        let err = ImageConfig::parse(cfg.as_bytes()).unwrap_err();
        assert!(err.to_string().contains("`rootfs.diff_ids[0]`"), "{err}");
        assert!(matches!(
            ImageConfig::parse(b"{not json"),
            Err(DocumentError::NotJson(_))
        ));
    }

    #[test]
    fn refuses_bad_digest_in_descriptor() {
        let json = r#"{"mediaType":"x","size":1,"digest":"sha256:../../x"}"#;
        assert!(serde_json::from_str::<Descriptor>(json).is_err());
    }
}
