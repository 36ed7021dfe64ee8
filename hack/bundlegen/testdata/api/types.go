// Package v1 is a small API for the generator's tests: testdata is not
// built, so it needs no imports that resolve.
package v1

// Widget runs widgets.
//
// It has a second paragraph.
//
// +kubebuilder:object:root=true
// +operator-sdk:csv:customresourcedefinitions:displayName="Widget App",order=1
// +operator-sdk:csv:customresourcedefinitions:resources={{Secret,v1},{Deployment,v1,widget-deployment}}
type Widget struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   WidgetSpec   `json:"spec"`
	Status WidgetStatus `json:"status,omitzero"`
}

// WidgetSpec is what a Widget wants.
type WidgetSpec struct {
	// size is how many widgets run.
	// +kubebuilder:validation:Minimum=1
	// +operator-sdk:csv:customresourcedefinitions:type=spec,displayName="Size",xDescriptors={"urn:alm:descriptor:com.tectonic.ui:podCount"}
	Size int32 `json:"size"`

	// ports the widgets listen on.
	// +operator-sdk:csv:customresourcedefinitions:type=spec
	Ports []PortSpec `json:"ports,omitempty"`

	Common `json:",inline"`

	// tls has no descriptor of its own; its field has.
	TLS *TLSSpec `json:"tls,omitempty"`

	// Untagged is named as encoding/json names it.
	// +operator-sdk:csv:customresourcedefinitions:type=spec,xDescriptors="urn:alm:descriptor:com.tectonic.ui:text"
	Untagged string

	internal string
}

// PortSpec is a port.
type PortSpec struct {
	// name of the port.
	// +operator-sdk:csv:customresourcedefinitions:type=spec,displayName=`Port Name`
	Name string `json:"name"`
}

// Common is inlined into WidgetSpec.
type Common struct {
	// logLevel of the widgets.
	// +operator-sdk:csv:customresourcedefinitions:type=spec,order=0,xDescriptors={"urn:alm:descriptor:com.tectonic.ui:select:debug","urn:alm:descriptor:com.tectonic.ui:select:info"}
	LogLevel string `json:"logLevel,omitempty"`
}

// TLSSpec configures TLS.
type TLSSpec struct {
	// secretName holds the certificate.
	// +operator-sdk:csv:customresourcedefinitions:type=spec,displayName="Certificate Secret",xDescriptors="urn:alm:descriptor:io.kubernetes:Secret"
	SecretName string `json:"secretName"`
}

// WidgetStatus is what the operator saw.
type WidgetStatus struct {
	// conditions of the widgets.
	// +operator-sdk:csv:customresourcedefinitions:type=status,xDescriptors={"urn:alm:descriptor:io.kubernetes.conditions"}
	Conditions []metav1.Condition `json:"conditions,omitempty"`

	// readyReplicas is how many widgets are ready.
	// +operator-sdk:csv:customresourcedefinitions:type=status,displayName="Ready"
	ReadyReplicas int32 `json:"readyReplicas"`
}

// WidgetList is a list of Widgets.
type WidgetList struct {
	Items []Widget `json:"items"`
}
