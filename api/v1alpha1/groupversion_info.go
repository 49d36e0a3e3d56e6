// Package v1alpha1 contains the v1alpha1 version of the nodetask.io API: the NodeTask kind,
// which runs a PowerShell script or a container image once on every matching Windows node
// through a HostProcess pod.
//
// +kubebuilder:object:generate=true
// +groupName=nodetask.io
package v1alpha1

import (
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/scheme"
)

var (
	// GroupVersion is the group and version of the objects in this package.
	GroupVersion = schema.GroupVersion{Group: "nodetask.io", Version: "v1alpha1"}

	// SchemeBuilder registers the types of this package with a runtime.Scheme.
	SchemeBuilder = &scheme.Builder{GroupVersion: GroupVersion}

	// AddToScheme adds the types of this package to a runtime.Scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)
