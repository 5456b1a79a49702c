-- Argo CD health check for the ModelOps resources (modelops.dev/v1alpha1):
-- TrainingJob, ModelDeployment and IncrementalUpdate. One script serves all three kinds;
-- register it once per kind in argocd-cm (docs/gitops.md shows how).
--
-- Argo CD runs it with gopher-lua (Lua 5.1 semantics): `obj` is the live object and the
-- script returns {status = ..., message = ...}. tests/unit/test_argocd_health.py runs it
-- under Lua 5.1 and 5.4 against statuses built from the API models.
--
--   no status yet, or status.observedGeneration < metadata.generation   -> Progressing
--   TrainingJob      Pending/Provisioning/Running -> Progressing, Succeeded -> Healthy,
--                    Failed -> Degraded
--   ModelDeployment  Available -> Healthy (also scaled to zero; Progressing while a
--                    rollout is in flight), Pending/Progressing -> Progressing,
--                    Degraded/Failed or Available=False -> Degraded
--   IncrementalUpdate spec.suspend -> Suspended, Idle -> Healthy (Progressing while it
--                    waits for a first promoted version; Degraded when Ready=False or the
--                    last run failed), Training/Evaluating -> Progressing, Failed -> Degraded
--   any kind         a condition Degraded=True or Failed=True -> Degraded

local function condition(status, kind)
  if type(status.conditions) ~= "table" then
    return nil
  end
  for _, c in ipairs(status.conditions) do
    if c.type == kind then
      return c
    end
  end
  return nil
end

local function is_true(c)
  return c ~= nil and c.status == "True"
end

local function is_false(c)
  return c ~= nil and c.status == "False"
end

-- The most useful text a condition carries, or `fallback`.
local function explain(c, fallback)
  if c ~= nil and type(c.message) == "string" and c.message ~= "" then
    return c.message
  end
  if c ~= nil and type(c.reason) == "string" and c.reason ~= "" then
    return c.reason
  end
  return fallback
end

local function num(value)
  if type(value) ~= "number" then
    return "?"
  end
  if value == math.floor(value) then
    return string.format("%d", value)
  end
  return string.format("%g", value)
end

local function result(status, message)
  return {status = status, message = message}
end

local function training_job(status)
  local phase = status.phase
  if phase == "Succeeded" then
    local version = status.modelVersion
    if type(version) == "table" then
      local text = "Trained " .. tostring(version.name) .. " version " .. num(version.version)
      if type(status.mainMetric) == "string" then
        text = text .. " (" .. status.mainMetric .. ")"
      end
      return result("Healthy", text)
    end
    return result("Healthy", "Training succeeded")
  end
  if phase == "Failed" then
    return result("Degraded", status.message or explain(condition(status, "Ready"), "Training failed"))
  end
  if phase == "Running" then
    local progress = status.progress or {}
    return result("Progressing", "Training: epoch " .. num(progress.epoch or 0) .. "/" ..
      num(progress.totalEpochs or 0) .. " (" .. num(progress.percent or 0) .. "%)")
  end
  if phase == "Pending" or phase == "Provisioning" then
    local workers = status.workers or {}
    return result("Progressing", phase .. ": " .. num(workers.ready or 0) .. "/" ..
      num(workers.desired or 0) .. " workers ready")
  end
  return result("Unknown", "Unknown phase " .. tostring(phase))
end

local function model_deployment(status)
  local phase = status.phase
  if phase == "Degraded" or phase == "Failed" then
    return result("Degraded", explain(condition(status, "Degraded"),
      status.message or ("ModelDeployment is " .. phase)))
  end
  local available = condition(status, "Available")
  local progressing = condition(status, "Progressing")
  local replicas = num(status.readyReplicas or 0) .. "/" .. num(status.desiredReplicas or 0) ..
    " replicas ready"
  if phase == "Pending" or phase == "Progressing" or is_true(progressing) then
    if status.candidateVersion ~= nil then
      local traffic = status.traffic or {}
      local share = num(traffic.candidate or 0) .. "% of traffic"
      if traffic.shadow then
        share = "shadow traffic"
      end
      return result("Progressing", "Rolling out version " .. num(status.candidateVersion) ..
        ": " .. share .. ", " .. replicas)
    end
    return result("Progressing", explain(progressing, "Waiting for the inference pods") ..
      " (" .. replicas .. ")")
  end
  if phase == "Available" then
    if is_false(available) and available.reason == "ScaledToZero" then
      return result("Healthy", "Scaled to zero; the first request wakes it")
    end
    if is_false(available) then
      return result("Degraded", explain(available, "Not available"))
    end
    local text = "Serving version " .. num(status.activeVersion) .. " on " .. replicas
    if status.activeVersion == nil then
      text = "Available on " .. replicas
    end
    return result("Healthy", text)
  end
  return result("Unknown", "Unknown phase " .. tostring(phase))
end

local function incremental_update(spec, status)
  if type(spec) == "table" and spec.suspend == true then
    return result("Suspended", "Suspended: no new update runs start")
  end
  local phase = status.phase
  if phase == "Failed" then
    return result("Degraded", explain(condition(status, "Ready"), "Incremental update failed"))
  end
  if phase == "Training" or phase == "Evaluating" then
    local run = status.currentRun or {}
    local text = phase .. " update run"
    if type(run.trainingJob) == "string" then
      text = text .. " " .. run.trainingJob
    end
    if type(run.delta) == "table" then
      text = text .. " on " .. num((run.delta.newShards or 0) + (run.delta.changedShards or 0)) ..
        " new or changed shards"
    end
    return result("Progressing", text)
  end
  if phase == "Idle" then
    local ready = condition(status, "Ready")
    if is_false(ready) and ready.reason == "WaitingForBaseline" then
      return result("Progressing", explain(ready, "Waiting for a promoted version"))
    end
    if is_false(ready) then
      return result("Degraded", explain(ready, "Not ready"))
    end
    if status.lastResult == "Failed" then
      local history = status.history
      local reason = "see status.history"
      if type(history) == "table" and #history > 0 and type(history[#history].reason) == "string" then
        reason = history[#history].reason
      end
      return result("Degraded", "Last update run failed: " .. reason)
    end
    if status.promotedVersion ~= nil then
      return result("Healthy", "Idle; promoted version " .. num(status.promotedVersion))
    end
    return result("Healthy", "Idle; watching for new data")
  end
  return result("Unknown", "Unknown phase " .. tostring(phase))
end

local function assess(o)
  local status = o.status
  if type(status) ~= "table" or next(status) == nil then
    return result("Progressing", "Waiting for the operator to report status")
  end
  local generation = nil
  if type(o.metadata) == "table" then
    generation = o.metadata.generation
  end
  if type(generation) == "number" then
    local observed = status.observedGeneration
    if type(observed) ~= "number" then
      return result("Progressing", "Waiting for the operator to observe generation " ..
        num(generation))
    end
    if observed < generation then
      return result("Progressing", "Waiting for the operator to observe generation " ..
        num(generation) .. " (status is of generation " .. num(observed) .. ")")
    end
  end
  local degraded = condition(status, "Degraded")
  if is_true(degraded) then
    return result("Degraded", explain(degraded, "Degraded"))
  end
  local failed = condition(status, "Failed")
  if is_true(failed) then
    return result("Degraded", explain(failed, "Failed"))
  end
  if o.kind == "TrainingJob" then
    return training_job(status)
  end
  if o.kind == "ModelDeployment" then
    return model_deployment(status)
  end
  if o.kind == "IncrementalUpdate" then
    return incremental_update(o.spec, status)
  end
  local ready = condition(status, "Ready")
  if is_true(ready) then
    return result("Healthy", explain(ready, "Ready"))
  end
  return result("Unknown", "Not a ModelOps kind: " .. tostring(o.kind))
end

local ok, hs = pcall(assess, obj)
if not ok then
  return {status = "Unknown", message = "health check error: " .. tostring(hs)}
end
return hs
