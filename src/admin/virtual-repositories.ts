import { z } from "zod";
import { RegistryError } from "../errors";
import { isRepositoryKey } from "../names";
import { getRepositories, getVirtualSettings, type VirtualSettings } from "../storage/metadata";
import { validate } from "./shared";

/**
 * Maximum number of members of a virtual repository. Member keys are bound as
 * SQL parameters in one query, and D1 allows at most 100 per query.
 */
export const maxMembers = 50;

const memberKeySchema = z.string().refine(isRepositoryKey, "each member must be a repository key, such as docker-local");

const membersSchema = z
  .array(memberKeySchema)
  .max(maxMembers, `a virtual repository may list at most ${maxMembers} members`)
  .superRefine((members, context) => {
    members.forEach((member, index) => {
      if (members.indexOf(member) === index) return;
      context.addIssue({ code: "custom", path: [index], message: `member '${member}' is listed more than once` });
    });
  });

/** The fields of a virtual repository in a create request, beside `key` and `type`. */
export const virtualCreateFields = {
  description: z.string().max(1024).default(""),
  members: membersSchema,
  defaultDeploymentRepository: z.string().optional(),
};

const updateVirtualSchema = z
  .strictObject({
    description: z.string().max(1024).optional(),
    members: membersSchema.optional(),
    defaultDeploymentRepository: z.string().nullable().optional(),
  })
  .refine((patch) => Object.keys(patch).length > 0, "the request changes nothing; set at least one field");

/** The members and default deployment repository of a virtual repository, as the admin API names them. */
export interface VirtualDefinition {
  members: string[];
  defaultDeploymentRepository: string | null;
}

/**
 * Checks a virtual repository's definition against the other repositories.
 * Throws INVALID_REQUEST with one issue for each member that is the
 * repository itself, does not exist or is virtual, and one for a default
 * deployment repository that is not a local member.
 */
export async function assertValidDefinition(db: D1Database, key: string, definition: VirtualDefinition): Promise<void> {
  const types = await repositoryTypes(db, definition.members);
  const issues: { path: string; message: string }[] = [];
  definition.members.forEach((member, index) => {
    const path = `members.${index}`;
    if (member === key) issues.push({ path, message: `virtual repository '${key}' cannot be a member of itself` });
    else if (!types.has(member)) issues.push({ path, message: `member '${member}' does not exist; create it first` });
    else if (types.get(member) === "virtual") {
      issues.push({ path, message: `member '${member}' is a virtual repository; members must be local or remote repositories` });
    }
  });

  const deployment = definition.defaultDeploymentRepository;
  if (deployment !== null && (!definition.members.includes(deployment) || types.get(deployment) !== "local")) {
    issues.push({
      path: "defaultDeploymentRepository",
      message: `defaultDeploymentRepository '${deployment}' must be a local repository listed in members`,
    });
  }
  if (issues.length > 0) throw new RegistryError("INVALID_REQUEST", "virtual repository definition is invalid", { issues });
}

/** Builds the statements that store a virtual repository's definition, replacing any earlier one. */
export function definitionStatements(db: D1Database, key: string, definition: VirtualDefinition): D1PreparedStatement[] {
  return [
    db
      .prepare(
        `INSERT INTO virtual_repositories (repository_key, default_deployment_key) VALUES (?, ?)
         ON CONFLICT (repository_key) DO UPDATE SET default_deployment_key = excluded.default_deployment_key`,
      )
      .bind(key, definition.defaultDeploymentRepository),
    db.prepare("DELETE FROM virtual_repository_members WHERE virtual_key = ?").bind(key),
    ...definition.members.map((member, position) =>
      db.prepare("INSERT INTO virtual_repository_members (virtual_key, member_key, position) VALUES (?, ?, ?)").bind(key, member, position),
    ),
  ];
}

/**
 * Validates a PATCH of a virtual repository and returns its statements and
 * the changed field names. Members, when given, replace the whole list. The
 * result is checked as a whole, so members that drop the default deployment
 * repository are rejected unless the PATCH also changes or clears it.
 */
export async function updateStatements(
  db: D1Database,
  key: string,
  body: unknown,
): Promise<{ statements: D1PreparedStatement[]; changed: string[] }> {
  const patch = validate(updateVirtualSchema, body, "virtual repository settings");
  const current = (await getVirtualSettings(db, key))!;
  const definition: VirtualDefinition = {
    members: patch.members ?? current.members.map((member) => member.key),
    defaultDeploymentRepository:
      patch.defaultDeploymentRepository === undefined ? current.defaultDeploymentKey : patch.defaultDeploymentRepository,
  };
  await assertValidDefinition(db, key, definition);

  const statements = definitionStatements(db, key, definition);
  if (patch.description !== undefined) {
    statements.push(db.prepare("UPDATE repositories SET description = ? WHERE key = ?").bind(patch.description, key));
  }
  return { statements, changed: Object.keys(patch) };
}

/** Presents a virtual repository's members, in configured order, and its default deployment repository. */
export function presentVirtual(settings: VirtualSettings): VirtualDefinition {
  return { members: settings.members.map((member) => member.key), defaultDeploymentRepository: settings.defaultDeploymentKey };
}

/**
 * Returns whether a D1 error is a failed foreign key, which a member deleted
 * between the checks and the write causes.
 */
export function isForeignKeyFailure(error: unknown): boolean {
  return error instanceof Error && error.message.includes("FOREIGN KEY constraint failed");
}

async function repositoryTypes(db: D1Database, keys: string[]): Promise<Map<string, string>> {
  const repositories = await getRepositories(db, keys);
  return new Map(repositories.map((repository) => [repository.key, repository.type]));
}
