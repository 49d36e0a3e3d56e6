-- Health of a NodeTask (nodetask.io/v1alpha1): a PowerShell script or an image run once on
-- every matching Windows node (https://github.com/nodetask/nodetask-operator).
--
-- The status follows kstatus: Ready, Reconciling and Stalled conditions, each with
-- observedGeneration, and status.observedGeneration. This check reads them as kstatus does,
-- with Suspended for spec.suspend and for a run that waits for approval after its first
-- batch, Degraded for an audit that found drift, and a progress message while nodes run.
--
-- It uses the base and table libraries only (no string library), so that it also runs as
-- an argocd-cm health customization without useOpenLibs.

local hs = {}

local function condition(ctype)
  if obj.status == nil or obj.status.conditions == nil then
    return nil
  end
  for _, c in ipairs(obj.status.conditions) do
    if c.type == ctype then
      return c
    end
  end
  return nil
end

local function count(field)
  if obj.status == nil or obj.status[field] == nil then
    return 0
  end
  return obj.status[field]
end

-- A spec the controller has not acted on yet says nothing about the nodes.
local generation = obj.metadata.generation
if obj.status == nil or obj.status.observedGeneration == nil or
    (generation ~= nil and obj.status.observedGeneration < generation) then
  hs.status = "Progressing"
  hs.message = "Waiting for the NodeTask controller to observe generation " .. tostring(generation)
  return hs
end

local stalled = condition("Stalled")
if stalled ~= nil and stalled.status == "True" then
  hs.status = "Degraded"
  hs.message = stalled.message
  return hs
end

local targets = count("targets")
local failed = count("failed")
local done = count("succeeded") + failed
local progress = tostring(done) .. "/" .. tostring(targets) .. " nodes done, " .. tostring(failed) .. " failed"

if obj.spec ~= nil and obj.spec.suspend == true then
  hs.status = "Suspended"
  hs.message = "Suspended: " .. progress
  return hs
end

local ready = condition("Ready")
local reconciling = condition("Reconciling")
-- A run that paused after its first batch (spec.rollout.pauseAfterFirstBatch) waits for a
-- person, not for the nodes: Suspended, with the message that says how to approve it
-- (kubectl nodetask approve, or spec.rollout.approvedRun in git).
if reconciling ~= nil and reconciling.status == "True" and reconciling.reason == "AwaitingApproval" then
  hs.status = "Suspended"
  hs.message = reconciling.message or (ready and ready.message) or "awaiting approval after the first batch"
  return hs
end
-- An Audit run (spec.mode Audit) that found nodes out of compliance is done (Ready, reason
-- NonCompliant) but the nodes are not as they should be: Degraded, so that the application
-- shows the drift and Argo CD's notifications fire. Ready's message counts and names them.
if ready ~= nil and ready.status == "True" and ready.reason == "NonCompliant" then
  hs.status = "Degraded"
  hs.message = ready.message
  return hs
end
if ready ~= nil and ready.status == "True" then
  hs.status = "Healthy"
  hs.message = ready.message
  return hs
end

hs.status = "Progressing"
-- Nothing in flight and not done: no node matches yet. Ready's message says so.
if reconciling ~= nil and reconciling.status == "False" and ready ~= nil and ready.message ~= nil then
  hs.message = ready.message
  return hs
end
hs.message = progress
local running = count("running")
if running > 0 then
  hs.message = hs.message .. ", " .. tostring(running) .. " running"
end
-- Say what the pending nodes wait for: a NotReady node, a retry, a full quota.
if ready ~= nil and ready.reason ~= nil and ready.reason ~= "Progressing" then
  hs.message = hs.message .. " (" .. ready.reason .. ")"
end
return hs
