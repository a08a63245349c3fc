# An example site policy for vicflow plans (docs/policy.md). `vicflow plan BLUEPRINT --policy policies/example`
# evaluates it against the plan; the deployments take it from their `policy` parameter.
# input.rows: every plan row {step, action, target, detail, kind}; input.blast_radius: the counts.
package vicflow.plan

import rego.v1

# A change to many hosts' firewalls is looked at by a human first.
approval contains msg if {
	input.blast_radius.esxi_hosts_firewall > 8
	msg := sprintf("%d ESXi hosts' firewalls would change (more than 8)", [input.blast_radius.esxi_hosts_firewall])
}

# A new or deleted VCH takes or frees vCenter resources: someone says yes.
approval contains msg if {
	some row in input.rows
	row.kind == "vch"
	row.action in {"create", "delete"}
	msg := sprintf("step %s would %s VCH %s", [row.step, row.action, row.target])
}

# A volume store holds the data of every container of a VCH: a run never deletes one.
deny contains msg if {
	some row in input.rows
	row.kind == "volume_store"
	row.action == "delete"
	msg := sprintf("step %s would delete volume store %s: never delete a volume store", [row.step, row.target])
}

# Data is lost with a removed volume.
warn contains msg if {
	input.blast_radius.volumes_removed > 0
	msg := sprintf("%d volume(s) would be removed with their data", [input.blast_radius.volumes_removed])
}

# What a step would change is known only after an earlier step applies: the counts above are a lower bound.
warn contains msg if {
	count(input.blast_radius.not_yet_known) > 0
	# concat, not sprintf("%s", [concat(...)]): regopy 1.5 returns the latter with unescaped quotes (docs/policy.md)
	msg := concat("", ["known only after apply, so not counted: ", concat(", ", input.blast_radius.not_yet_known)])
}
