// Glue between the Python tests and @cloud-copilot/iam-simulate: no policy logic lives here.
//
// stdin:  a JSON array of simulations, each in the package's `Simulation` shape
//         ({request: {principal, action, resource: {resource, accountId}, contextVariables},
//          identityPolicies, serviceControlPolicies, resourceControlPolicies,
//          resourcePolicy?, sessionPolicy?, ...}).
// stdout: a JSON array, one entry per simulation, in order:
//         {"result": "Allowed" | "ImplicitlyDenied" | "ExplicitlyDenied" | "Error",
//          "errors": <the package's validation errors or the exception it threw, when
//                     result is "Error">,
//          "ignoredContextKeys": [<keys the simulator dropped as not applicable>],
//          "resourceType": <the resource type the ARN was matched to>}
// Strict mode: the request is evaluated exactly as supplied.
import { runSimulation } from '@cloud-copilot/iam-simulate'

const chunks = []
for await (const chunk of process.stdin) {
  chunks.push(chunk)
}
const simulations = JSON.parse(Buffer.concat(chunks).toString('utf8'))

const results = []
for (const simulation of simulations) {
  let response
  try {
    response = await runSimulation(simulation, { simulationMode: 'Strict' })
  } catch (error) {
    // e.g. "Condition key ... not found": the simulator's data lacks a key the request names.
    results.push({ result: 'Error', errors: { message: String(error) } })
    continue
  }
  if (response.resultType === 'error') {
    results.push({ result: 'Error', errors: response.errors })
  } else if (response.resultType === 'single') {
    results.push({
      result: response.overallResult,
      ignoredContextKeys: response.result.ignoredContextKeys ?? [],
      resourceType: response.result.resourceType ?? null
    })
  } else {
    // A wildcard in the request's resource: the tests name concrete resources only.
    results.push({ result: 'Error', errors: { message: 'wildcard resource in request' } })
  }
}
process.stdout.write(JSON.stringify(results))
