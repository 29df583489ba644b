package oci

import "fmt"

// kindRef makes a reference of a local transport ("docker-archive",
// "oci-archive", "oci") without parsing.
func kindRef(kind, path, tag string) Ref {
	switch kind {
	case "docker-archive":
		return Ref{dockerArchive{path: path, tag: tag}}
	case "oci-archive":
		return Ref{ociArchive{path: path, tag: tag}}
	case "oci":
		return Ref{ociLayout{path: path, tag: tag}}
	}
	panic(fmt.Sprintf("kindRef: transport %q", kind))
}

// refParts says which transport r is ("docker" for a registry), and its
// path and tag.
func refParts(r Ref) (kind, path, tag string) {
	switch t := r.t.(type) {
	case remoteRegistry:
		return "docker", "", ""
	case dockerArchive:
		return "docker-archive", t.path, t.tag
	case ociArchive:
		return "oci-archive", t.path, t.tag
	case ociLayout:
		return "oci", t.path, t.tag
	}
	return "", "", ""
}
