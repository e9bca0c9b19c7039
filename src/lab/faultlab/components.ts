/** The lab's components, in the order a run executes them. */
import type { Component } from './types';
import { component as crash } from './crash';
import { component as ioerr } from './ioerr';
import { component as reload } from './reload';
import { component as corrupt } from './corrupt';
import { component as fuzz } from './fuzz';
import { component as torture } from './torture';

export const COMPONENTS: readonly Component[] = [crash, ioerr, reload, torture, corrupt, fuzz];
