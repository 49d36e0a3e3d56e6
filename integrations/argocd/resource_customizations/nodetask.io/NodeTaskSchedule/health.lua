-- Health of a NodeTaskSchedule (nodetask.io/v1alpha1): a NodeTask created at the times of a
-- cron schedule (https://github.com/nodetask/nodetask-operator).
--
-- The status follows kstatus: Ready, Reconciling and Stalled conditions, each with
-- observedGeneration, and status.observedGeneration. Healthy: the last run succeeded (or
-- none has run yet) and the next is planned. Progressing: a run is active, or the last run
-- found no node. Degraded: Stalled (the last run failed, the schedule or time zone is
-- invalid, a run could not be created). Suspended: spec.suspend.
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

-- A spec the controller has not acted on yet says nothing about the runs.
local generation = obj.metadata.generation
if obj.status == nil or obj.status.observedGeneration == nil or
    (generation ~= nil and obj.status.observedGeneration < generation) then
  hs.status = "Progressing"
  hs.message = "Waiting for the NodeTaskSchedule controller to observe generation " .. tostring(generation)
  return hs
end

local stalled = condition("Stalled")
if stalled ~= nil and stalled.status == "True" then
  hs.status = "Degraded"
  hs.message = stalled.message
  return hs
end

local ready = condition("Ready")
if obj.spec ~= nil and obj.spec.suspend == true then
  hs.status = "Suspended"
  hs.message = "Suspended"
  if ready ~= nil and ready.message ~= nil and ready.message ~= "" then
    hs.message = ready.message
  end
  return hs
end

if ready ~= nil and ready.status == "True" then
  hs.status = "Healthy"
  hs.message = ready.message
  return hs
end

hs.status = "Progressing"
hs.message = "Waiting for the schedule's Ready condition"
if ready ~= nil and ready.message ~= nil and ready.message ~= "" then
  hs.message = ready.message
end
return hs
